/* cri_request_fuzz.c — libFuzzer target for a CRI request on its way to a
 * container, without I/O: the protobuf decoding of RunPodSandboxRequest or
 * CreateContainerRequest, the handlers' validation (agent/cri/validate.c),
 * and for a valid container config the translation into the runtime's
 * config (spec_build, with the image config the input carries), packed as
 * the pod manager stores it and unpacked again.
 * Input: one byte (even: RunPodSandboxRequest, odd: CreateContainerRequest),
 * two bytes of length (big-endian), that many bytes of protobuf, then the
 * image config JSON. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spec.h"
#include "validate.h"

static const char passwd[] = "root:x:0:0:root:/root:/bin/sh\n"
			     "app:x:1000:1000:app:/home/app:/bin/sh\n";
static const char group[] = "root:x:0:\nstaff:x:50:app\n";

static void container(const Runtime__V1__CreateContainerRequest *q, const char *image_config)
{
	ad_error *err = NULL;
	if (!q->config)
		return;
	if (cri_validate_container_config(q->config, &err) < 0) {
		if (!err || !err->message[0])
			abort(); /* a refusal says why */
		ad_error_free(&err);
		return;
	}
	if (q->sandbox_config && cri_validate_pod_config(q->sandbox_config, &err) < 0) {
		ad_error_free(&err);
		return;
	}
	static const spec_device devices[64];
	if (q->config->n_devices > 64)
		return;
	spec_input in = {
	    .config = q->config,
	    .pod = q->sandbox_config,
	    .image_config = image_config,
	    .id = "fuzz",
	    .rootfs = "/r",
	    .log_path = "/logs/fuzz.log",
	    .pod_dir = "/pods/p",
	    .netns = "/run/netns/p",
	    .infra_pid = 42,
	    .target_pid = 43,
	    .passwd = passwd,
	    .group = group,
	    .devices = devices,
	};
	spec_result res;
	if (spec_build(&in, &res, &err) < 0) {
		if (!err || !err->message[0])
			abort();
		ad_error_free(&err);
	} else {
		char *packed = NULL;
		size_t len = 0;
		rt_config_pack(&res.cfg, &packed, &len);
		rt_config back;
		if (rt_config_unpack(packed, len, &back, &err) < 0)
			abort(); /* what we packed must unpack */
		rt_config_unpacked_clear(&back);
		free(packed);
	}
	spec_result_clear(&res);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 3)
		return 0;
	size_t len = (size_t)data[1] << 8 | data[2];
	if (len > size - 3)
		len = size - 3;
	const uint8_t *pb = data + 3;
	char *image_config = ad_strndup((const char *)pb + len, size - 3 - len);
	if (data[0] & 1) {
		Runtime__V1__CreateContainerRequest *q =
		    runtime__v1__create_container_request__unpack(NULL, len, pb);
		if (q)
			container(q, image_config);
		runtime__v1__create_container_request__free_unpacked(q, NULL);
	} else {
		Runtime__V1__RunPodSandboxRequest *q =
		    runtime__v1__run_pod_sandbox_request__unpack(NULL, len, pb);
		ad_error *err = NULL;
		if (q && q->config && cri_validate_pod_config(q->config, &err) < 0) {
			if (!err || !err->message[0])
				abort();
			ad_error_free(&err);
		}
		runtime__v1__run_pod_sandbox_request__free_unpacked(q, NULL);
	}
	free(image_config);
	return 0;
}
