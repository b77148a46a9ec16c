/*
 * spank_rsing: run Slurm tasks inside rsing containers, in the spirit of pyxis.
 *
 *   srun --container-image=IMAGE [--container-mounts=SRC[:DST[:ro|rw]][,...]]
 *        [--container-workdir=DIR] [--container-env=NAME[,NAME...]] CMD [ARGS...]
 *
 * runs every task as `rsing exec [-B MOUNTS] [--pwd DIR] IMAGE CMD ARGS...`. IMAGE is anything
 * `rsing exec` takes: a SIF, a SquashFS file, a directory or docker://REF (pulled through the
 * user's cache, once per node even when many tasks start at once). The tasks of one job step
 * on one node share one user namespace and one FUSE mount through rsing's image server, as
 * pyxis's tasks share one container, so MPI shared-memory transports work between them.
 *
 * Plugin arguments (plugstack.conf):  required /path/spank_rsing.so [rsing=/path/to/rsing]
 *   rsing=PATH   the rsing binary (default: `rsing` found on the task's PATH)
 *
 * How the task becomes a container: Slurm >= 23.11 has spank_prepend_task_argv(), which puts
 * `rsing exec ... IMAGE` in front of the task's argv and leaves the rest of Slurm's launch
 * (TaskProlog, TMPDIR, rlimits) as it is. Older Slurm (Debian 12 has 22.05) has no way to grow
 * the task's argv, so slurm_spank_task_init, the last plugin hook before Slurm's own execve,
 * execs rsing itself with the task's final environment. That skips TaskProlog/--task-prolog
 * (documented in docs/slurm.md); the rlimits srun propagates are already in place.
 *
 * Only job steps started by srun are containerised: the batch script itself runs on the host
 * (its file lives in slurmd's spool directory), and an `#SBATCH --container-image` reaches
 * the job's srun steps through Slurm's SPANK option environment.
 *
 * --container-env=NAME passes the task's value of NAME as RSINGENV_NAME, which rsing sets
 * inside the container after the image's own environment, so the host value wins (pyxis'
 * meaning). Values never appear in argv.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <slurm/slurm.h>
#include <slurm/spank.h>

SPANK_PLUGIN(rsing, 1);

enum { OPT_IMAGE, OPT_MOUNTS, OPT_WORKDIR, OPT_ENV };

static char *opt_image, *opt_mounts, *opt_workdir, *opt_env;
static char rsing_bin[PATH_MAX] = "rsing";

static int set_option(int val, const char *optarg, int remote)
{
	char **slot;
	(void)remote;
	switch (val) {
	case OPT_IMAGE: slot = &opt_image; break;
	case OPT_MOUNTS: slot = &opt_mounts; break;
	case OPT_WORKDIR: slot = &opt_workdir; break;
	case OPT_ENV: slot = &opt_env; break;
	default: return -1;
	}
	if (!optarg || !*optarg) {
		slurm_error("rsing: an empty value is not allowed here");
		return -1;
	}
	free(*slot);
	*slot = strdup(optarg);
	return *slot ? 0 : -1;
}

/* Registered with spank_option_register: a `spank_options` table is not offered by sbatch. */
static struct spank_option options[] = {
	{ "container-image", "IMAGE",
	  "Run each task in `rsing exec IMAGE` (SIF, SquashFS, directory or docker://REF)", 1,
	  OPT_IMAGE, set_option },
	{ "container-mounts", "SRC[:DST[:ro|rw]][,...]",
	  "Bind host paths into the container (rsing -B)", 1, OPT_MOUNTS, set_option },
	{ "container-workdir", "DIR", "Working directory inside the container", 1, OPT_WORKDIR,
	  set_option },
	{ "container-env", "NAME[,NAME...]",
	  "Give these variables the task's values inside the container, over the image's", 1,
	  OPT_ENV, set_option },
	SPANK_OPTIONS_TABLE_END
};

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	int i;
	spank_context_t ctx = spank_context();
	/* slurmd and prolog/epilog contexts have no options and no tasks: nothing to do. */
	if (ctx != S_CTX_LOCAL && ctx != S_CTX_REMOTE && ctx != S_CTX_ALLOCATOR)
		return 0;
	for (i = 0; options[i].name; i++) {
		if (spank_option_register(sp, &options[i]) != ESPANK_SUCCESS) {
			slurm_error("rsing: cannot register --%s", options[i].name);
			return -1;
		}
	}
	for (i = 0; i < ac; i++) {
		if (strncmp(av[i], "rsing=", 6) == 0 && av[i][6]) {
			if (strlen(av[i] + 6) >= sizeof(rsing_bin)) {
				slurm_error("rsing: plugin argument %s is too long", av[i]);
				return -1;
			}
			strcpy(rsing_bin, av[i] + 6);
		} else {
			slurm_error("rsing: unknown plugin argument `%s` (expected rsing=PATH)",
				    av[i]);
			return -1;
		}
	}
	return 0;
}

/* True for the steps whose tasks run in a container: those started by srun. */
static int is_srun_step(spank_t sp)
{
	uint32_t step = 0;
	if (spank_get_item(sp, S_JOB_STEPID, &step) != ESPANK_SUCCESS)
		return 0;
	/* Not the batch script, the extern step (pam_slurm_adopt) or salloc's interactive step. */
	return step != SLURM_BATCH_SCRIPT && step != SLURM_EXTERN_CONT &&
	       step != SLURM_INTERACTIVE_STEP;
}

/* Sets RSINGENV_NAME to the task's NAME for each NAME of the comma list. */
static int export_container_env(spank_t sp)
{
	char *list, *name, *save = NULL, key[256], *value;
	int rc = 0;
	size_t size = 1 << 16;
	spank_err_t got;

	if (!opt_env)
		return 0;
	list = strdup(opt_env);
	value = malloc(size);
	if (!list || !value) {
		free(list);
		free(value);
		return -1;
	}
	for (name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
		if (snprintf(key, sizeof(key), "RSINGENV_%s", name) >= (int)sizeof(key)) {
			slurm_error("rsing: --container-env name too long: %s", name);
			rc = -1;
			break;
		}
		got = spank_getenv(sp, name, value, size);
		if (got == ESPANK_ENV_NOEXIST)
			continue; /* unset for the task: nothing to pass */
		if (got != ESPANK_SUCCESS) {
			slurm_error("rsing: cannot read %s for --container-env", name);
			rc = -1;
			break;
		}
		if (spank_setenv(sp, key, value, 1) != ESPANK_SUCCESS) {
			slurm_error("rsing: cannot set %s", key);
			rc = -1;
			break;
		}
	}
	free(list);
	free(value);
	return rc;
}

/* The `rsing exec OPTIONS IMAGE` prefix; returns its length (at most 8 entries). */
static int build_prefix(const char **prefix, const char *rsing)
{
	int n = 0;
	prefix[n++] = rsing;
	prefix[n++] = "exec";
	if (opt_mounts) {
		prefix[n++] = "--bind";
		prefix[n++] = opt_mounts;
	}
	if (opt_workdir) {
		prefix[n++] = "--pwd";
		prefix[n++] = opt_workdir;
	}
	prefix[n++] = opt_image;
	prefix[n] = NULL;
	return n;
}

/* The rsing binary: the plugin argument if it names a path, else a search of the task's
 * PATH (rsing_bin has no slash). Writes into out; returns 0 when found. */
static int find_rsing(spank_t sp, char *out, size_t size)
{
	char path[8192], *dir, *save = NULL;
	struct stat st;

	if (strchr(rsing_bin, '/')) {
		snprintf(out, size, "%s", rsing_bin);
		return access(out, X_OK);
	}
	if (spank_getenv(sp, "PATH", path, sizeof(path)) != ESPANK_SUCCESS)
		snprintf(path, sizeof(path), "/usr/local/bin:/usr/bin:/bin");
	for (dir = strtok_r(path, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		if (snprintf(out, size, "%s/%s", *dir ? dir : ".", rsing_bin) >= (int)size)
			continue;
		if (stat(out, &st) == 0 && S_ISREG(st.st_mode) && access(out, X_OK) == 0)
			return 0;
	}
	return -1;
}

#if SLURM_VERSION_NUMBER >= SLURM_VERSION_NUM(23, 11, 0)
static int start_task(spank_t sp, const char **prefix, int n)
{
	if (spank_prepend_task_argv(sp, n, prefix) != ESPANK_SUCCESS) {
		slurm_error("rsing: spank_prepend_task_argv failed");
		return -1;
	}
	return 0;
}
#else
/* Slurm < 23.11: exec rsing now, with the task's argv and final environment. */
static int start_task(spank_t sp, const char **prefix, int n)
{
	int argc = 0, i;
	char **argv = NULL, **env = NULL, **full, probe[2];

	if (spank_get_item(sp, S_JOB_ARGV, &argc, &argv) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_JOB_ENV, &env) != ESPANK_SUCCESS) {
		slurm_error("rsing: cannot read the task's argv and environment");
		return -1;
	}
	full = calloc((size_t)(n + argc + 1), sizeof(char *));
	if (!full)
		return -1;
	for (i = 0; i < n; i++)
		full[i] = (char *)prefix[i];
	for (i = 0; i < argc; i++)
		full[n + i] = argv[i];
	/* Slurm sets a default TMPDIR after this hook; do it here, as it would. */
	if (spank_getenv(sp, "TMPDIR", probe, sizeof(probe)) == ESPANK_ENV_NOEXIST) {
		spank_setenv(sp, "TMPDIR", "/tmp", 0);
		spank_get_item(sp, S_JOB_ENV, &env);
	}
	execve(full[0], full, env);
	slurm_error("rsing: cannot execute %s: %s", full[0], strerror(errno));
	free(full);
	return -1;
}
#endif

int slurm_spank_task_init(spank_t sp, int ac, char **av)
{
	char rsing[PATH_MAX];
	const char *prefix[9];
	(void)ac;
	(void)av;

	if (!opt_image || !spank_remote(sp) || !is_srun_step(sp))
		return 0;
	if (find_rsing(sp, rsing, sizeof(rsing)) != 0) {
		slurm_error("rsing: rsing binary `%s` not found (plugin argument rsing=PATH)",
			    rsing_bin);
		return -1;
	}
	if (export_container_env(sp) != 0)
		return -1;
	return start_task(sp, prefix, build_prefix(prefix, rsing));
}
