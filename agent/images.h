/* images.h — the image services: the CRI runtime.v1.ImageService handlers
 * (cri_image.c, listed in cri_service.c's `implemented` table) and
 * agent.v1.ImageService (agent_image.c). Both work on the one image store
 * that main.c opens before serving. */
#ifndef AGENTD_IMAGES_H
#define AGENTD_IMAGES_H

#include "services.h"
#include "store.h"

/* Opens the store under cfg->root with the [images] settings. */
int agent_images_open(const cfg_config *cfg, store **ret_store, ad_error **err);
/* The store the handlers use (set once, before the servers start: agent_ctx
 * belongs to the daemon core, so the store does not live there). */
void agent_images_set_store(store *s);
store *agent_images_store(void);
/* The same, or NULL with AD_E_UNAVAILABLE when it is not open. */
store *agent_images_require_store(ad_error **err);

/* agent.v1.ImageService. */
void agent_image_register(svc_table *t, agent_ctx *ctx);

rpc_code cri_pull_image(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			void *userdata);
rpc_code cri_list_images(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			 void *userdata);
rpc_code cri_image_status(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			  void *userdata);
rpc_code cri_remove_image(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			  void *userdata);
rpc_code cri_image_fs_info(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			   void *userdata);

#endif
