/* The HTTP/1.1 head of an upgrade (the client's request, the server's
 * response), parsed with http-parser; what follows the head belongs to the
 * upgraded protocol. */
#include <http_parser.h>
#include <stdio.h>
#include <strings.h>
#include <string.h>

#include "httpstream.h"

static int on_url(http_parser *p, const char *at, size_t len)
{
	hs_http_head *r = p->data;
	struct http_parser_url u;
	http_parser_url_init(&u);
	if (http_parser_parse_url(at, len, 0, &u) != 0 || !(u.field_set & (1 << UF_PATH)))
		return -1;
	r->path = ad_strndup(at + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
	if (u.field_set & (1 << UF_QUERY))
		r->query = ad_strndup(at + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
	return 0;
}

/* The whole head is parsed in one call: names and values come in one piece. */
static int on_header_field(http_parser *p, const char *at, size_t len)
{
	hs_http_head *r = p->data;
	if (r->n_headers == HS_HTTP_MAX_HEADERS)
		return -1;
	char *name = ad_strndup(at, len);
	for (char *c = name; *c; c++)
		if (*c >= 'A' && *c <= 'Z')
			*c = (char)(*c - 'A' + 'a');
	r->headers[r->n_headers].name = name;
	r->headers[r->n_headers].value = ad_strdup("");
	r->n_headers++;
	return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
	hs_http_head *r = p->data;
	if (!r->n_headers)
		return -1;
	free(r->headers[r->n_headers - 1].value);
	r->headers[r->n_headers - 1].value = ad_strndup(at, len);
	return 0;
}

static int on_headers_complete(http_parser *p)
{
	hs_http_head *r = p->data;
	r->done = true;
	if (p->type == HTTP_REQUEST)
		snprintf(r->method, sizeof(r->method), "%s", http_method_str(p->method));
	else
		r->status = (int)p->status_code;
	http_parser_pause(p, 1);
	return 0;
}

static int parse_head(hs_http_head *req, enum http_parser_type type, const uint8_t *data,
		      size_t len, const char **why)
{
	const uint8_t *end = len ? memmem(data, len, "\r\n\r\n", 4) : NULL;
	if (!end) {
		if (len > HS_HTTP_MAX_HEAD) {
			*why = "HTTP head too large";
			return -1;
		}
		return 0;
	}
	size_t head = (size_t)(end - data) + 4;
	if (head > HS_HTTP_MAX_HEAD) {
		*why = "HTTP head too large";
		return -1;
	}
	hs_http_head_clear(req);
	http_parser_settings s = {
	    .on_url = on_url,
	    .on_header_field = on_header_field,
	    .on_header_value = on_header_value,
	    .on_headers_complete = on_headers_complete,
	};
	http_parser p;
	http_parser_init(&p, type);
	p.data = req;
	http_parser_execute(&p, &s, (const char *)data, head);
	enum http_errno e = HTTP_PARSER_ERRNO(&p);
	if (!req->done || (e != HPE_OK && e != HPE_PAUSED)) {
		*why = e != HPE_OK && e != HPE_PAUSED ? http_errno_description(e)
						      : "malformed HTTP head";
		hs_http_head_clear(req);
		return -1;
	}
	if (type == HTTP_REQUEST && !req->path) {
		*why = "no request path";
		hs_http_head_clear(req);
		return -1;
	}
	req->head_len = head;
	return 1;
}

int hs_http_parse_request(hs_http_head *head, const uint8_t *data, size_t len, const char **why)
{
	return parse_head(head, HTTP_REQUEST, data, len, why);
}

int hs_http_parse_response(hs_http_head *head, const uint8_t *data, size_t len, const char **why)
{
	return parse_head(head, HTTP_RESPONSE, data, len, why);
}

void hs_http_head_clear(hs_http_head *req)
{
	free(req->path);
	free(req->query);
	for (size_t i = 0; i < req->n_headers; i++) {
		free(req->headers[i].name);
		free(req->headers[i].value);
	}
	*req = (hs_http_head){0};
}

const char *hs_http_header(const hs_http_head *req, const char *name)
{
	for (size_t i = 0; i < req->n_headers; i++)
		if (!strcasecmp(req->headers[i].name, name))
			return req->headers[i].value;
	return NULL;
}

bool hs_http_has_token(const hs_http_head *req, const char *name, const char *token)
{
	size_t tl = strlen(token);
	for (size_t i = 0; i < req->n_headers; i++) {
		if (strcasecmp(req->headers[i].name, name))
			continue;
		for (const char *p = req->headers[i].value; *p;) {
			p += strspn(p, " \t,");
			size_t n = strcspn(p, ",");
			size_t k = n;
			while (k && (p[k - 1] == ' ' || p[k - 1] == '\t'))
				k--;
			if (k == tl && !strncasecmp(p, token, tl))
				return true;
			p += n;
		}
	}
	return false;
}
