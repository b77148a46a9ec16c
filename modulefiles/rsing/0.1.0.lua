-- rsing: rootless containers for HPC (Lmod / Lua).
-- Install: copy this file to <modulepath>/rsing/0.1.0.lua; RSING_PREFIX (environment) or the
-- default below points at the directory that holds bin/rsing.
help([[
rsing runs SIF and SquashFS container images as yourself, without root.
  rsing exec image.sif cmd    rsing run image.sif    rsing shell image.sif
]])
whatis("Name: rsing")
whatis("Version: 0.1.0")
whatis("Description: rootless containers for HPC (Apptainer-compatible images)")

family("container-runtime")
local prefix = os.getenv("RSING_PREFIX") or "/opt/rsing/0.1.0"
prepend_path("PATH", pathJoin(prefix, "bin"))
prepend_path("MANPATH", pathJoin(prefix, "share/man"))
-- Site defaults a centre may set here, for example:
-- setenv("RSING_CONFIG", "/etc/rsing/rsing.conf")
