/* Any protobuf-c message as JSON, walking its descriptor (pbjson.h). */
#include "pbjson.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"

size_t pbjson_elem_size(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
	case PROTOBUF_C_TYPE_DOUBLE:
		return 8;
	case PROTOBUF_C_TYPE_BOOL:
		return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_STRING:
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(void *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	default:
		return 4;
	}
}

/* protoc names a map's entry type "<Field>Entry", with exactly the fields key
 * and value. */
bool pbjson_is_map_entry(const ProtobufCMessageDescriptor *d)
{
	size_t n = strlen(d->name);
	return d->n_fields == 2 && n > 5 && strcmp(d->name + n - 5, "Entry") == 0 &&
	       strcmp(d->fields[0].name, "key") == 0 && strcmp(d->fields[1].name, "value") == 0;
}

char *pbjson_camel_name(const char *name)
{
	char *s = ad_strdup(name), *o = s;
	for (const char *p = name; *p; p++) {
		if (*p == '_' && p[1]) {
			*o++ = (char)toupper((unsigned char)*++p);
			continue;
		}
		*o++ = *p;
	}
	*o = 0;
	return s;
}

static json_t *text_json(const char *s, size_t len)
{
	json_t *v = json_stringn(s, len);
	return v ? v : json_string("<invalid utf-8>");
}

static json_t *value_json(const ProtobufCFieldDescriptor *f, const void *p, pbjson_style style)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		return json_integer(*(const int32_t *)p);
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		return json_integer(*(const uint32_t *)p);
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		return json_integer(*(const int64_t *)p);
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		return json_integer((json_int_t) * (const uint64_t *)p);
	case PROTOBUF_C_TYPE_FLOAT:
		return json_real(*(const float *)p);
	case PROTOBUF_C_TYPE_DOUBLE:
		return json_real(*(const double *)p);
	case PROTOBUF_C_TYPE_BOOL:
		return json_boolean(*(const protobuf_c_boolean *)p);
	case PROTOBUF_C_TYPE_ENUM: {
		int v = *(const int *)p;
		const ProtobufCEnumValue *ev =
		    style == PBJSON_GO ? NULL
				       : protobuf_c_enum_descriptor_get_value(f->descriptor, v);
		return ev ? json_string(ev->name) : json_integer(v);
	}
	case PROTOBUF_C_TYPE_STRING: {
		const char *s = *(char *const *)p;
		return text_json(s ? s : "", s ? strlen(s) : 0);
	}
	case PROTOBUF_C_TYPE_BYTES: {
		/* As text in both styles (Go would write base64): the CRI's
		 * bytes fields are text. */
		const ProtobufCBinaryData *b = p;
		return text_json((const char *)b->data, b->len);
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
		return m ? pbjson_from_message(m, style) : json_null();
	}
	}
	return json_null();
}

static void map_entry_json(json_t *obj, const ProtobufCMessage *entry, pbjson_style style)
{
	const ProtobufCFieldDescriptor *kf = &entry->descriptor->fields[0];
	const ProtobufCFieldDescriptor *vf = &entry->descriptor->fields[1];
	const char *key = *(char *const *)((const char *)entry + kf->offset);
	json_object_set_new(obj, key ? key : "",
			    value_json(vf, (const char *)entry + vf->offset, style));
}

/* Go's omitempty: false, 0, "". */
static bool is_zero(const json_t *v)
{
	return json_is_false(v) || (json_is_integer(v) && json_integer_value(v) == 0) ||
	       (json_is_real(v) && json_real_value(v) == 0) ||
	       (json_is_string(v) && json_string_length(v) == 0);
}

json_t *pbjson_from_message(const ProtobufCMessage *msg, pbjson_style style)
{
	const ProtobufCMessageDescriptor *d = msg->descriptor;
	const char *base = (const char *)msg;
	json_t *o = json_object();
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		const void *p = base + f->offset;
		json_t *v;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)(base + f->quantifier_offset);
			if (!n && style == PBJSON_GO)
				continue;
			const char *arr = *(char *const *)p;
			bool map = f->type == PROTOBUF_C_TYPE_MESSAGE &&
				   pbjson_is_map_entry(f->descriptor);
			v = map ? json_object() : json_array();
			for (size_t j = 0; j < n; j++) {
				const void *e = arr + j * pbjson_elem_size(f->type);
				if (map)
					map_entry_json(v, *(ProtobufCMessage *const *)e, style);
				else
					json_array_append_new(v, value_json(f, e, style));
			}
		} else {
			if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
			    *(const uint32_t *)(base + f->quantifier_offset) != f->id)
				continue;
			if (f->label == PROTOBUF_C_LABEL_OPTIONAL &&
			    f->type != PROTOBUF_C_TYPE_STRING &&
			    f->type != PROTOBUF_C_TYPE_MESSAGE &&
			    !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
			    !*(const protobuf_c_boolean *)(base + f->quantifier_offset))
				continue;
			if (f->type == PROTOBUF_C_TYPE_MESSAGE && !*(ProtobufCMessage *const *)p)
				continue;
			v = value_json(f, p, style);
			if (style == PBJSON_GO && is_zero(v)) {
				json_decref(v);
				continue;
			}
		}
		if (style == PBJSON_GO) {
			json_object_set_new(o, f->name, v);
		} else {
			_cleanup_free_ char *key = pbjson_camel_name(f->name);
			json_object_set_new(o, key, v);
		}
	}
	return o;
}
