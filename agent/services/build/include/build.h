/* build.h — the one public header of agent/services/build: agent.v1's
 * BuildService (Dockerfile builds with a progress stream, commit of a
 * container's changes) on the image store, agentd's runtime and the pods. */
#ifndef AGENTD_BUILD_H
#define AGENTD_BUILD_H

#include "config.h"
#include "pods.h"
#include "services.h"
#include "store.h"

typedef struct build_service build_service;

/* Builds run their RUN steps as containers of a runtime of their own (state
 * under <state>/build, so the pod manager never sees them); leftovers of an
 * interrupted build (work dirs, build containers' rootfs) are removed here.
 * Without a usable runtime builds still serve COPY-only Dockerfiles and
 * RUN answers UNAVAILABLE with the reason. */
int build_service_new(const cfg_config *cfg, store *images, mgr *pods, build_service **ret,
		      ad_error **err);
void build_service_free(build_service *b);

/* agent.v1.BuildService (b NULL: its calls answer UNAVAILABLE). */
void svc_build_register(svc_table *t, build_service *b);

#endif
