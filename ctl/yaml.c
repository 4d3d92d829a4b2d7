/* YAML for agentctl on libyaml: -o yaml emits the same jansson tree that
 * -o json prints, and config files in YAML load into the jansson tree that
 * a JSON file gives, so one mapping (ctl_pb_from_json) serves both. Both
 * directions share one idea of which plain scalars are not strings. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "ctl.h"

#define CONFIG_MAX_SIZE (4 << 20)
/* Nesting deeper than any CRI message goes; bounds the loader's recursion. */
#define MAX_DEPTH 128
/* Nodes a document may stand for once its aliases are expanded: aliases of
 * aliases must not make a small file into billions of values. */
#define MAX_EXPANDED_NODES 1000000

/* ---- plain scalars that are not strings -------------------------------------- */

typedef enum scalar_kind { SCALAR_STRING, SCALAR_NULL, SCALAR_BOOL, SCALAR_INT, SCALAR_FLOAT,
			   SCALAR_OTHER } scalar_kind;

/* The implicit types of YAML 1.1 (what PyYAML and go-yaml v2, so crictl,
 * resolve) plus YAML 1.2's forms (1e3, 0o17): a string looking like any of
 * them is quoted on output, and a plain scalar matching one loads as it. */
static const char *const resolvers[] = {
    [SCALAR_NULL] = "^(~|null|Null|NULL)$",
    [SCALAR_BOOL] = "^(y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|"
		    "off|Off|OFF)$",
    [SCALAR_INT] = "^([-+]?0b[01_]+|[-+]?0o?[0-7_]+|[-+]?(0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$",
    [SCALAR_FLOAT] = "^([-+]?([0-9][0-9_]*\\.[0-9_]*|\\.[0-9][0-9_]*)([eE][-+]?[0-9]+)?|[-+]?[0-9]"
		     "[0-9_]*[eE][-+]?[0-9]+|[-+]?\\.(inf|Inf|INF)|\\.(nan|NaN|NAN))$",
    /* Sexagesimal numbers, timestamps, merge and value keys: loaded as
     * strings, but quoted on output so no reader takes them for more. */
    [SCALAR_OTHER] = "^([-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\\.[0-9_]*)?|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}"
		     "([Tt ].*)?|<<|=)$",
};

static scalar_kind resolve_plain(const char *s)
{
	static regex_t re[SCALAR_OTHER + 1];
	static bool compiled;
	if (!compiled) {
		for (int k = SCALAR_NULL; k <= SCALAR_OTHER; k++)
			if (regcomp(&re[k], resolvers[k], REG_EXTENDED | REG_NOSUB) != 0)
				abort(); /* the patterns are constants */
		compiled = true;
	}
	if (!*s)
		return SCALAR_NULL;
	for (int k = SCALAR_NULL; k <= SCALAR_OTHER; k++)
		if (regexec(&re[k], s, 0, NULL, 0) == 0)
			return (scalar_kind)k;
	return SCALAR_STRING;
}

/* ---- jansson -> YAML ------------------------------------------------------------- */

typedef struct emitter {
	yaml_emitter_t e;
	bool failed;
} emitter;

static void emit(emitter *em, yaml_event_t *ev)
{
	if (!em->failed && !yaml_emitter_emit(&em->e, ev))
		em->failed = true;
}

static void emit_scalar(emitter *em, const char *s, size_t len, bool is_text)
{
	/* A string that would read back as another type gets quotes. */
	bool plain_ok = !is_text || (strlen(s) == len && resolve_plain(s) == SCALAR_STRING);
	yaml_event_t ev;
	yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)len, plain_ok,
				     1, YAML_ANY_SCALAR_STYLE);
	emit(em, &ev);
}

static void emit_value(emitter *em, json_t *v)
{
	yaml_event_t ev;
	char buf[64];
	switch (json_typeof(v)) {
	case JSON_OBJECT: {
		yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_ANY_MAPPING_STYLE);
		emit(em, &ev);
		const char *k;
		json_t *x;
		json_object_foreach(v, k, x)
		{
			emit_scalar(em, k, strlen(k), true);
			emit_value(em, x);
		}
		yaml_mapping_end_event_initialize(&ev);
		emit(em, &ev);
		return;
	}
	case JSON_ARRAY: {
		yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_ANY_SEQUENCE_STYLE);
		emit(em, &ev);
		size_t i;
		json_t *x;
		json_array_foreach(v, i, x) emit_value(em, x);
		yaml_sequence_end_event_initialize(&ev);
		emit(em, &ev);
		return;
	}
	case JSON_STRING:
		emit_scalar(em, json_string_value(v), json_string_length(v), true);
		return;
	case JSON_INTEGER:
		snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		break;
	case JSON_REAL: {
		/* As jansson prints it, with the '.' YAML 1.1 needs in a float. */
		double d = json_real_value(v);
		snprintf(buf, sizeof(buf), "%.17g", d);
		if (!strchr(buf, '.')) {
			char *e = strchr(buf, 'e');
			if (e)
				memmove(e + 2, e, strlen(e) + 1), e[0] = '.', e[1] = '0';
			else
				strcat(buf, ".0");
		}
		break;
	}
	case JSON_TRUE:
		strcpy(buf, "true");
		break;
	case JSON_FALSE:
		strcpy(buf, "false");
		break;
	default:
		strcpy(buf, "null");
	}
	emit_scalar(em, buf, strlen(buf), false);
}

/* One YAML document on out; explicit_start puts "---" before it (a stream of
 * documents, as events prints). */
static void emit_document(FILE *out, json_t *o, bool explicit_start)
{
	emitter em = {0};
	yaml_emitter_initialize(&em.e);
	yaml_emitter_set_output_file(&em.e, out);
	yaml_emitter_set_unicode(&em.e, 1);
	yaml_emitter_set_width(&em.e, -1); /* long values stay on one line */
	yaml_event_t ev;
	yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING);
	emit(&em, &ev);
	yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, !explicit_start);
	emit(&em, &ev);
	emit_value(&em, o);
	yaml_document_end_event_initialize(&ev, 1);
	emit(&em, &ev);
	yaml_stream_end_event_initialize(&ev);
	emit(&em, &ev);
	if (em.failed)
		ctl_warnx("writing YAML: %s", em.e.problem ? em.e.problem : "emitter error");
	yaml_emitter_delete(&em.e);
}

void ctl_print(json_t *o, ctl_format fmt)
{
	if (fmt == CTL_YAML) {
		emit_document(stdout, o, false);
	} else {
		json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		fputc('\n', stdout);
	}
	json_decref(o);
}

void ctl_print_stream_item(json_t *o, ctl_format fmt)
{
	if (fmt == CTL_YAML) {
		emit_document(stdout, o, true);
	} else {
		char *s = json_dumps(o, JSON_COMPACT);
		if (s)
			printf("%s\n", s);
		free(s);
	}
	json_decref(o);
	fflush(stdout);
}

/* ---- YAML -> jansson ------------------------------------------------------------- */

typedef struct anchor {
	char *name;
	json_t *value;
	size_t nodes; /* what the value stands for, its aliases expanded */
} anchor;

typedef struct loader {
	yaml_parser_t p;
	const char *file;
	const char *data;
	size_t len;
	anchor *anchors;
	size_t n_anchors;
	char *error; /* "LINE:COL: what" */
	size_t expanded; /* nodes loaded so far, aliases counted expanded */
	json_t *marks;	 /* where each value starts (ctl_config_mark) */
} loader;

static json_t *load_fail(loader *l, yaml_mark_t mark, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static json_t *load_fail(loader *l, yaml_mark_t mark, const char *fmt, ...)
{
	if (l->error)
		return NULL;
	va_list ap;
	va_start(ap, fmt);
	char *what = NULL;
	if (vasprintf(&what, fmt, ap) < 0)
		what = NULL;
	va_end(ap);
	l->error = ad_asprintf("%zu:%zu: %s", mark.line + 1, mark.column + 1, what ? what : "");
	free(what);
	return NULL;
}

static bool next_event(loader *l, yaml_event_t *ev)
{
	if (yaml_parser_parse(&l->p, ev))
		return true;
	yaml_mark_t at = l->p.problem_mark;
	/* libyaml's words for a tab do not say "tab". */
	const char *hint = at.index < l->len && l->data[at.index] == '\t'
			       ? " (a tab: YAML indents with spaces)"
			       : "";
	load_fail(l, at, "invalid YAML: %s%s%s%s", l->p.problem ? l->p.problem : "error",
		  l->p.context ? " " : "", l->p.context ? l->p.context : "", hint);
	return false;
}

static bool tag_is(const yaml_char_t *tag, const char *name)
{
	return tag && strcmp((const char *)tag, name) == 0;
}

/* A YAML number without the '_' it may use to group digits. */
static char *without_underscores(const char *s)
{
	char *out = ad_strdup(s), *o = out;
	for (; *s; s++)
		if (*s != '_')
			*o++ = *s;
	*o = '\0';
	return out;
}

/* YAML 1.1 integers: 0x, 0o and 0b prefixes, a leading 0 for octal, '_' as
 * a separator. */
static bool parse_int(const char *s, json_int_t *ret)
{
	_cleanup_free_ char *digits = without_underscores(s);
	const char *p = digits;
	bool neg = *p == '-';
	if (*p == '-' || *p == '+')
		p++;
	int base = 10;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
		base = 16, p += 2;
	else if (p[0] == '0' && (p[1] == 'o' || p[1] == 'O'))
		base = 8, p += 2;
	else if (p[0] == '0' && (p[1] == 'b' || p[1] == 'B'))
		base = 2, p += 2;
	else if (p[0] == '0' && p[1])
		base = 8, p += 1;
	if (!*p)
		return false;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(p, &end, base);
	if (errno || *end || v > (unsigned long long)INT64_MAX + neg)
		return false;
	*ret = neg ? (json_int_t)(0 - v) : (json_int_t)v;
	return true;
}

static json_t *load_scalar(loader *l, const yaml_event_t *ev)
{
	const char *s = (const char *)ev->data.scalar.value;
	size_t len = ev->data.scalar.length;
	const yaml_char_t *tag = ev->data.scalar.tag;
	scalar_kind kind = SCALAR_STRING;
	if (tag && !tag_is(tag, "!") && !tag_is(tag, YAML_STR_TAG)) {
		if (tag_is(tag, YAML_NULL_TAG))
			kind = SCALAR_NULL;
		else if (tag_is(tag, YAML_BOOL_TAG))
			kind = SCALAR_BOOL;
		else if (tag_is(tag, YAML_INT_TAG))
			kind = SCALAR_INT;
		else if (tag_is(tag, YAML_FLOAT_TAG))
			kind = SCALAR_FLOAT;
		else
			return load_fail(l, ev->start_mark, "unsupported tag '%s'", (const char *)tag);
		if (resolve_plain(s) != kind &&
		    !(kind == SCALAR_FLOAT && resolve_plain(s) == SCALAR_INT))
			return load_fail(l, ev->start_mark, "'%s' is not a valid !!%s", s,
					 strrchr((const char *)tag, ':') + 1);
	} else if (!tag && ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && strlen(s) == len) {
		kind = resolve_plain(s);
	}
	switch (kind) {
	case SCALAR_NULL:
		return json_null();
	case SCALAR_BOOL:
		return json_boolean(strcasecmp(s, "y") == 0 || strcasecmp(s, "yes") == 0 ||
				    strcasecmp(s, "true") == 0 || strcasecmp(s, "on") == 0);
	case SCALAR_INT: {
		json_int_t v;
		if (!parse_int(s, &v))
			return load_fail(l, ev->start_mark, "integer '%s' out of range", s);
		return json_integer(v);
	}
	case SCALAR_FLOAT: {
		_cleanup_free_ char *digits = without_underscores(s);
		double d = strtod(digits, NULL);
		/* JSON has no infinity or NaN: such a value stays text, which
		 * a number field then refuses by name. */
		if (isfinite(d))
			return json_real(d);
	}
	/* fall through */
	default: {
		json_t *v = json_stringn(s, len);
		return v ? v : load_fail(l, ev->start_mark, "invalid UTF-8 in a string");
	}
	}
}

static json_t *load_node(loader *l, yaml_event_t *ev, int depth);

static void mark_key(const json_t *v, char key[32])
{
	snprintf(key, 32, "%p", (const void *)v);
}

static void remember_mark(loader *l, json_t *v, yaml_mark_t at)
{
	/* null, true and false are shared singletons: no place of their own. */
	if (!v || json_is_null(v) || json_is_boolean(v))
		return;
	char key[32];
	mark_key(v, key);
	if (!json_object_get(l->marks, key))
		json_object_set_new(l->marks, key,
				    json_pack("[I,I]", (json_int_t)at.line + 1,
					      (json_int_t)at.column + 1));
}

bool ctl_config_mark(json_t *marks, const json_t *v, int *ret_line, int *ret_column)
{
	char key[32];
	mark_key(v, key);
	json_t *at = marks ? json_object_get(marks, key) : NULL;
	if (!at)
		return false;
	*ret_line = (int)json_integer_value(json_array_get(at, 0));
	*ret_column = (int)json_integer_value(json_array_get(at, 1));
	return true;
}

static void remember_anchor(loader *l, const yaml_char_t *name, json_t *v, size_t nodes)
{
	if (!name || !v)
		return;
	/* A later anchor of the same name hides the earlier one. */
	l->anchors = ad_realloc(l->anchors, (l->n_anchors + 1) * sizeof(*l->anchors));
	l->anchors[l->n_anchors++] =
	    (anchor){ad_strdup((const char *)name), json_incref(v), nodes};
}

/* The entries of a "<<" merge value (a mapping or a list of them) that the
 * mapping does not set itself. */
static bool merge_into(loader *l, json_t *obj, json_t *merge, yaml_mark_t at)
{
	json_t *list = json_is_array(merge) ? merge : NULL;
	size_t n = list ? json_array_size(list) : 1;
	for (size_t i = 0; i < n; i++) {
		json_t *m = list ? json_array_get(list, i) : merge;
		if (!json_is_object(m)) {
			load_fail(l, at, "'<<' merges mappings only");
			return false;
		}
		json_object_update_missing(obj, m);
	}
	return true;
}

static json_t *load_mapping(loader *l, const yaml_event_t *start, int depth)
{
	json_t *obj = json_object();
	json_t *merges = json_array();
	yaml_mark_t merge_at = start->start_mark;
	for (;;) {
		yaml_event_t kev;
		if (!next_event(l, &kev))
			break;
		if (kev.type == YAML_MAPPING_END_EVENT) {
			yaml_event_delete(&kev);
			json_t *m;
			size_t i;
			bool ok = true;
			json_array_foreach(merges, i, m) ok = ok && merge_into(l, obj, m, merge_at);
			json_decref(merges);
			if (!ok) {
				json_decref(obj);
				return NULL;
			}
			return obj;
		}
		if (kev.type != YAML_SCALAR_EVENT) {
			load_fail(l, kev.start_mark, "a mapping key must be a plain value");
			yaml_event_delete(&kev);
			break;
		}
		_cleanup_free_ char *key = ad_strndup((const char *)kev.data.scalar.value,
						      kev.data.scalar.length);
		bool is_merge = strcmp(key, "<<") == 0 && !kev.data.scalar.tag &&
				kev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
		yaml_mark_t key_at = kev.start_mark;
		yaml_event_delete(&kev);
		yaml_event_t vev;
		if (!next_event(l, &vev))
			break;
		json_t *v = load_node(l, &vev, depth + 1);
		if (!v)
			break;
		if (is_merge) {
			json_array_append_new(merges, v);
			merge_at = key_at;
			continue;
		}
		if (json_object_get(obj, key)) {
			json_decref(v);
			load_fail(l, key_at, "duplicate key '%s'", key);
			break;
		}
		json_object_set_new(obj, key, v);
	}
	json_decref(merges);
	json_decref(obj);
	return NULL;
}

static json_t *load_sequence(loader *l, int depth)
{
	json_t *arr = json_array();
	for (;;) {
		yaml_event_t ev;
		if (!next_event(l, &ev))
			break;
		if (ev.type == YAML_SEQUENCE_END_EVENT) {
			yaml_event_delete(&ev);
			return arr;
		}
		json_t *v = load_node(l, &ev, depth + 1);
		if (!v)
			break;
		json_array_append_new(arr, v);
	}
	json_decref(arr);
	return NULL;
}

/* The node that ev starts (ev is consumed). */
static json_t *load_node(loader *l, yaml_event_t *ev, int depth)
{
	json_t *v = NULL;
	if (depth > MAX_DEPTH) {
		load_fail(l, ev->start_mark, "nested more than %d levels deep", MAX_DEPTH);
		yaml_event_delete(ev);
		return NULL;
	}
	size_t before = l->expanded++;
	yaml_mark_t at = ev->start_mark;
	switch (ev->type) {
	case YAML_SCALAR_EVENT:
		v = load_scalar(l, ev);
		remember_anchor(l, ev->data.scalar.anchor, v, 1);
		break;
	case YAML_SEQUENCE_START_EVENT:
		v = load_sequence(l, depth);
		remember_anchor(l, ev->data.sequence_start.anchor, v, l->expanded - before);
		break;
	case YAML_MAPPING_START_EVENT:
		v = load_mapping(l, ev, depth);
		remember_anchor(l, ev->data.mapping_start.anchor, v, l->expanded - before);
		break;
	case YAML_ALIAS_EVENT: {
		const char *name = (const char *)ev->data.alias.anchor;
		for (size_t i = l->n_anchors; i-- > 0 && !v;) {
			if (strcmp(l->anchors[i].name, name) == 0) {
				v = json_incref(l->anchors[i].value);
				l->expanded += l->anchors[i].nodes;
			}
		}
		if (!v)
			load_fail(l, ev->start_mark, "unknown alias '*%s'", name);
		if (v && l->expanded > MAX_EXPANDED_NODES) {
			json_decref(v);
			v = load_fail(l, ev->start_mark,
				      "aliases expand to more than %d values", MAX_EXPANDED_NODES);
		}
		break;
	}
	default:
		load_fail(l, ev->start_mark, "unexpected YAML event");
	}
	yaml_event_delete(ev);
	remember_mark(l, v, at);
	return v;
}

/* The first (only) document of a YAML stream; NULL with l->error set. */
static json_t *load_yaml(loader *l, const char *data, size_t len)
{
	l->data = data;
	l->len = len;
	yaml_parser_set_input_string(&l->p, (const unsigned char *)data, len);
	json_t *doc = NULL;
	yaml_event_t ev;
	while (!doc && !l->error && next_event(l, &ev)) {
		yaml_event_type_t t = ev.type;
		yaml_mark_t at = ev.start_mark;
		if (t == YAML_STREAM_START_EVENT || t == YAML_DOCUMENT_START_EVENT) {
			yaml_event_delete(&ev);
			continue;
		}
		if (t == YAML_STREAM_END_EVENT) {
			yaml_event_delete(&ev);
			load_fail(l, at, "the file holds no document");
			break;
		}
		doc = load_node(l, &ev, 0);
	}
	if (!doc)
		return NULL;
	/* Anything after the first document would be ignored silently. */
	for (bool done = false; !done && !l->error && next_event(l, &ev);) {
		if (ev.type == YAML_DOCUMENT_START_EVENT)
			load_fail(l, ev.start_mark, "more than one YAML document");
		done = ev.type == YAML_STREAM_END_EVENT;
		yaml_event_delete(&ev);
	}
	if (l->error) {
		json_decref(doc);
		return NULL;
	}
	return doc;
}

/* crictl's decoder takes a file that starts with '{' as JSON, else YAML. */
static bool looks_like_json(const char *data, size_t len)
{
	size_t i = 0;
	while (i < len && strchr(" \t\r\n", data[i]))
		i++;
	return i < len && data[i] == '{';
}

int ctl_load_config(const char *file, json_t **ret, json_t **ret_marks)
{
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	_cleanup_error_ ad_error *err = NULL;
	if (ad_read_file(AT_FDCWD, file, CONFIG_MAX_SIZE, &data, &len, &err) < 0) {
		ctl_warnx("%s: %s", file, err->message);
		return EX_NOINPUT;
	}
	json_t *obj;
	bool yaml = !looks_like_json(data, len);
	*ret_marks = NULL;
	if (!yaml) {
		json_error_t jerr;
		obj = json_loadb(data, len, 0, &jerr);
		if (!obj) {
			ctl_warnx("%s:%d:%d: invalid JSON: %s", file, jerr.line, jerr.column,
				  jerr.text);
			return EX_DATAERR;
		}
	} else {
		loader l = {.file = file, .marks = json_object()};
		yaml_parser_initialize(&l.p);
		obj = load_yaml(&l, data, len);
		yaml_parser_delete(&l.p);
		for (size_t i = 0; i < l.n_anchors; i++) {
			free(l.anchors[i].name);
			json_decref(l.anchors[i].value);
		}
		free(l.anchors);
		if (!obj) {
			ctl_warnx("%s:%s", file, l.error);
			free(l.error);
			json_decref(l.marks);
			return EX_DATAERR;
		}
		*ret_marks = l.marks;
	}
	if (!json_is_object(obj)) {
		json_decref(obj);
		json_decref(*ret_marks);
		*ret_marks = NULL;
		ctl_warnx("%s: expected a %s", file, yaml ? "YAML mapping" : "JSON object");
		return EX_DATAERR;
	}
	*ret = obj;
	return 0;
}
