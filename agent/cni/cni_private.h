/* Internal to libadcni. */
#ifndef AGENTD_CNI_PRIVATE_H
#define AGENTD_CNI_PRIVATE_H

#include "cni.h"

struct cni_exec_out {
	int status;	   /* as from waitpid */
	char *stdout_data; /* NULL when nothing was written */
	char *stderr_data;
};

/* Runs `path` with `envp`, `input` on its stdin; fills *out (caller frees the
 * buffers). Fails only when the plugin could not run or finish in time. */
int cni_exec(const char *path, char *const envp[], const char *input, int timeout_ms,
	     struct cni_exec_out *out, ad_error **err);

#endif
