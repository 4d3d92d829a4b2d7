/* The registry: labelled counters, gauges and histograms that any thread
 * updates (one mutex per family, held for a hash lookup and an add), and
 * the collectors that write their families at scrape time. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

typedef struct metrics_series {
	metrics_vec *vec;
	char *key;	   /* label values joined by '\xff' */
	char *labels;	   /* rendered for the exposition */
	double value;	   /* counter, gauge */
	uint64_t *buckets; /* histogram: per bucket (not cumulative), n_bounds */
	double sum;
	uint64_t count;
	uint64_t hash; /* of the values, for rehashing */
} series;

struct metrics_vec {
	metrics_type type;
	const char *name, *help;
	size_t n_labels;
	const char *const *label_names;
	double *bounds;
	size_t n_bounds;
	pthread_mutex_t mu;
	series **list; /* creation order */
	size_t n, cap_list;
	size_t *slots; /* open addressing: index + 1 into list, 0 = empty */
	size_t n_slots;
	metrics_vec *next;
};

typedef struct collector {
	metrics_collect_fn fn;
	void *arg;
} collector;

struct metrics_registry {
	pthread_mutex_t mu; /* the lists (instruments are added at start) */
	metrics_vec *first, *last;
	collector *collectors;
	size_t n_collectors;
};

metrics_registry *metrics_registry_new(void)
{
	metrics_registry *r = ad_malloc0(sizeof(*r));
	pthread_mutex_init(&r->mu, NULL);
	return r;
}

static void vec_free(metrics_vec *v)
{
	for (size_t i = 0; i < v->n; i++) {
		free(v->list[i]->key);
		free(v->list[i]->labels);
		free(v->list[i]->buckets);
		free(v->list[i]);
	}
	free(v->list);
	free(v->slots);
	free(v->bounds);
	pthread_mutex_destroy(&v->mu);
	free(v);
}

void metrics_registry_free(metrics_registry *r)
{
	if (!r)
		return;
	for (metrics_vec *v = r->first, *next; v; v = next) {
		next = v->next;
		vec_free(v);
	}
	free(r->collectors);
	pthread_mutex_destroy(&r->mu);
	free(r);
}

void metrics_registry_add_collector(metrics_registry *r, metrics_collect_fn fn, void *arg)
{
	pthread_mutex_lock(&r->mu);
	r->collectors = ad_realloc(r->collectors, (r->n_collectors + 1) * sizeof(collector));
	r->collectors[r->n_collectors++] = (collector){fn, arg};
	pthread_mutex_unlock(&r->mu);
}

static metrics_vec *vec_new(metrics_registry *r, metrics_type type, const char *name,
			    const char *help, size_t n_labels, const char *const *label_names)
{
	metrics_vec *v = ad_malloc0(sizeof(*v));
	v->type = type;
	v->name = name;
	v->help = help;
	v->n_labels = n_labels;
	v->label_names = label_names;
	pthread_mutex_init(&v->mu, NULL);
	pthread_mutex_lock(&r->mu);
	if (r->last)
		r->last->next = v;
	else
		r->first = v;
	r->last = v;
	pthread_mutex_unlock(&r->mu);
	return v;
}

metrics_vec *metrics_counter_vec(metrics_registry *r, const char *name, const char *help,
				 size_t n_labels, const char *const *label_names)
{
	return vec_new(r, METRICS_COUNTER, name, help, n_labels, label_names);
}

metrics_vec *metrics_gauge_vec(metrics_registry *r, const char *name, const char *help,
			       size_t n_labels, const char *const *label_names)
{
	return vec_new(r, METRICS_GAUGE, name, help, n_labels, label_names);
}

metrics_vec *metrics_histogram_vec(metrics_registry *r, const char *name, const char *help,
				   size_t n_labels, const char *const *label_names,
				   const double *bounds, size_t n_bounds)
{
	metrics_vec *v = vec_new(r, METRICS_HISTOGRAM, name, help, n_labels, label_names);
	v->bounds = ad_malloc0((n_bounds + 1) * sizeof(double));
	memcpy(v->bounds, bounds, n_bounds * sizeof(double));
	v->n_bounds = n_bounds;
	return v;
}

/* FNV-1a over the values and their separators. */
static uint64_t key_hash(size_t n, const char *const *values)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < n; i++) {
		for (const char *p = values[i] ? values[i] : ""; *p; p++)
			h = (h ^ (unsigned char)*p) * 1099511628211ULL;
		h = (h ^ 0xff) * 1099511628211ULL;
	}
	return h;
}

static bool key_equal(const char *key, size_t n, const char *const *values)
{
	for (size_t i = 0; i < n; i++) {
		const char *s = values[i] ? values[i] : "";
		size_t len = strlen(s);
		if (strncmp(key, s, len) != 0 || key[len] != '\xff')
			return false;
		key += len + 1;
	}
	return *key == '\0';
}

static void slots_insert(metrics_vec *v, size_t index, uint64_t h)
{
	size_t i = h & (v->n_slots - 1);
	while (v->slots[i])
		i = (i + 1) & (v->n_slots - 1);
	v->slots[i] = index + 1;
}

/* v->mu held. */
static series *series_get(metrics_vec *v, const char *const *values)
{
	uint64_t h = key_hash(v->n_labels, values);
	if (v->n_slots) {
		for (size_t i = h & (v->n_slots - 1); v->slots[i]; i = (i + 1) & (v->n_slots - 1)) {
			series *s = v->list[v->slots[i] - 1];
			if (key_equal(s->key, v->n_labels, values))
				return s;
		}
	}
	series *s = ad_malloc0(sizeof(*s));
	s->vec = v;
	s->hash = h;
	size_t len = 1;
	for (size_t i = 0; i < v->n_labels; i++)
		len += strlen(values[i] ? values[i] : "") + 1;
	s->key = ad_malloc0(len);
	for (size_t i = 0; i < v->n_labels; i++) {
		strcat(s->key, values[i] ? values[i] : "");
		strcat(s->key, "\xff");
	}
	s->labels = metrics_labels(v->n_labels, v->label_names, values);
	if (v->type == METRICS_HISTOGRAM)
		s->buckets = ad_malloc0((v->n_bounds + 1) * sizeof(uint64_t));
	if (v->n == v->cap_list) {
		v->cap_list = v->cap_list ? 2 * v->cap_list : 16;
		v->list = ad_realloc(v->list, v->cap_list * sizeof(series *));
	}
	v->list[v->n++] = s;
	if (2 * v->n > v->n_slots) {
		free(v->slots);
		v->n_slots = v->n_slots ? 2 * v->n_slots : 32;
		v->slots = ad_malloc0(v->n_slots * sizeof(size_t));
		for (size_t i = 0; i < v->n; i++)
			slots_insert(v, i, v->list[i]->hash);
	} else {
		slots_insert(v, v->n - 1, h);
	}
	return s;
}

metrics_series *metrics_vec_series(metrics_vec *v, const char *const *values)
{
	pthread_mutex_lock(&v->mu);
	series *s = series_get(v, values);
	pthread_mutex_unlock(&v->mu);
	return s;
}

void metrics_vec_add(metrics_vec *v, const char *const *values, double delta)
{
	pthread_mutex_lock(&v->mu);
	series_get(v, values)->value += delta;
	pthread_mutex_unlock(&v->mu);
}

void metrics_series_add(metrics_series *s, double delta)
{
	pthread_mutex_lock(&s->vec->mu);
	s->value += delta;
	pthread_mutex_unlock(&s->vec->mu);
}

void metrics_vec_set(metrics_vec *v, const char *const *values, double value)
{
	pthread_mutex_lock(&v->mu);
	series_get(v, values)->value = value;
	pthread_mutex_unlock(&v->mu);
}

static size_t bucket_of(const metrics_vec *v, double value)
{
	size_t b = 0;
	while (b < v->n_bounds && value > v->bounds[b])
		b++;
	return b; /* n_bounds: only +Inf */
}

/* v->mu held. */
static void observe_locked(series *s, size_t bucket, double value)
{
	s->buckets[bucket]++;
	s->sum += value;
	s->count++;
}

void metrics_vec_observe(metrics_vec *v, const char *const *values, double value)
{
	size_t b = bucket_of(v, value);
	pthread_mutex_lock(&v->mu);
	observe_locked(series_get(v, values), b, value);
	pthread_mutex_unlock(&v->mu);
}

void metrics_series_observe(metrics_series *s, double value)
{
	size_t b = bucket_of(s->vec, value);
	pthread_mutex_lock(&s->vec->mu);
	observe_locked(s, b, value);
	pthread_mutex_unlock(&s->vec->mu);
}

static void vec_write(metrics_vec *v, metrics_out *o)
{
	metrics_family(o, v->name, v->type, v->help);
	pthread_mutex_lock(&v->mu);
	uint64_t *cum =
	    v->type == METRICS_HISTOGRAM ? ad_malloc0((v->n_bounds + 1) * sizeof(uint64_t)) : NULL;
	for (size_t i = 0; i < v->n; i++) {
		series *s = v->list[i];
		if (v->type != METRICS_HISTOGRAM) {
			metrics_sample(o, NULL, s->labels, s->value);
			continue;
		}
		uint64_t run = 0;
		for (size_t b = 0; b < v->n_bounds; b++)
			cum[b] = run += s->buckets[b];
		metrics_histogram(o, s->labels, v->bounds, cum, v->n_bounds, s->sum, s->count);
	}
	pthread_mutex_unlock(&v->mu);
	free(cum);
}

void metrics_registry_write(metrics_registry *r, metrics_out *o)
{
	pthread_mutex_lock(&r->mu);
	metrics_vec *first = r->first;
	size_t n = r->n_collectors;
	collector *cs = n ? ad_malloc0(n * sizeof(collector)) : NULL;
	if (n)
		memcpy(cs, r->collectors, n * sizeof(collector));
	pthread_mutex_unlock(&r->mu);
	for (metrics_vec *v = first; v; v = v->next)
		vec_write(v, o);
	for (size_t i = 0; i < n; i++)
		cs[i].fn(o, cs[i].arg);
	free(cs);
}
