-- rsing 0.1.0: rootless containers for HPC (Lmod 8; docs/modules.md).
-- Install: copy this file to <modulepath>/rsing/0.1.0.lua and set the default prefix below to
-- the directory that holds bin/rsing (RSING_PREFIX in the environment overrides it).
-- Layout used under the prefix:
--   bin/rsing                                    PATH
--   share/man                                    MANPATH
--   share/bash-completion/completions/rsing      bash-completion, through XDG_DATA_DIRS
--   share/fish/vendor_completions.d/rsing.fish   fish, through XDG_DATA_DIRS
--   share/zsh/site-functions/_rsing              zsh, through FPATH
--   etc/rsing/rsing.conf                         site configuration (RSING_CONFIG), if present
help([[
rsing runs SIF and SquashFS container images as yourself, without root.
  rsing exec image.sif cmd    rsing run image.sif    rsing shell image.sif
  rsing module create --image image.sif --cmd python3 --dest ~/modulefiles python/3.12
Documentation: docs/modules.md; rsing --help.
]])
whatis("Name: rsing")
whatis("Version: 0.1.0")
whatis("Description: rootless containers for HPC (Apptainer-compatible images)")

family("container")
conflict("rsing")

local prefix = os.getenv("RSING_PREFIX") or "/opt/rsing/0.1.0"
local share = pathJoin(prefix, "share")
prepend_path("PATH", pathJoin(prefix, "bin"))
-- An empty MANPATH entry keeps man's default search path (an unset MANPATH would otherwise
-- become just this one directory).
if (os.getenv("MANPATH") or "") == "" then
    append_path("MANPATH", "")
end
prepend_path("MANPATH", pathJoin(share, "man"))
-- Shell completions. An unset XDG_DATA_DIRS means /usr/local/share:/usr/share: keep those.
if (os.getenv("XDG_DATA_DIRS") or "") == "" then
    append_path("XDG_DATA_DIRS", "/usr/local/share")
    append_path("XDG_DATA_DIRS", "/usr/share")
end
prepend_path("XDG_DATA_DIRS", share)
prepend_path("FPATH", pathJoin(share, "zsh/site-functions"))

-- Site defaults. A configuration file shipped with the installation is used when present.
local conf = pathJoin(prefix, "etc/rsing/rsing.conf")
if isFile(conf) then
    setenv("RSING_CONFIG", conf)
end
-- A centre may also set, for example (variables documented in docs/modules.md):
-- setenv("RSING_CACHEDIR", pathJoin("/scratch", os.getenv("USER") or "", ".rsing-cache"))
-- setenv("RSING_BIND", "/scratch,/project")
-- setenv("RSING_SHARE_LINGER", "30")
