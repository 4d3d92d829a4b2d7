/* pbjson.h — any protobuf-c message as JSON, by its descriptor, so that no
 * message needs code of its own: agentctl prints CRI answers with it and
 * agentd writes the verbose info of a status. */
#ifndef AGENTD_PBJSON_H
#define AGENTD_PBJSON_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

typedef enum pbjson_style {
	/* protojson, as crictl prints: lowerCamelCase keys, enum names, every
	 * field. */
	PBJSON_PROTOJSON,
	/* Go's encoding/json of the generated structs, as containerd writes a
	 * config into its verbose info: the .proto's field names, enums as
	 * numbers, zero values (0, "", false, empty lists and maps, unset
	 * messages) left out. */
	PBJSON_GO,
} pbjson_style;

json_t *pbjson_from_message(const ProtobufCMessage *msg, pbjson_style style);

/* What both directions need. */
/* The size of one element of a repeated field of this type. */
size_t pbjson_elem_size(ProtobufCType t);
/* A map<K, V> field's entry type (protobuf-c does not mark them). */
bool pbjson_is_map_entry(const ProtobufCMessageDescriptor *d);
/* "log_directory" -> "logDirectory" (malloc'd). */
char *pbjson_camel_name(const char *name);

#endif
