/* The decisions health/ makes, as pure functions over small structs, so they can be tested
 * without sockets or clocks: the active-check state machine (thresholds, the first check),
 * the expected-status match, ejection times with their growth, cap and decay, and how many
 * endpoints of a cluster may be ejected at once. health.c applies them on the main thread;
 * nothing here keeps state of its own, so any thread may call them. */
#ifndef PF_HEALTH_VERDICT_H
#define PF_HEALTH_VERDICT_H

#include "config/config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One endpoint's active-check history. */
typedef struct pf_check_state {
    bool healthy;      /* the active check's verdict */
    bool pending;      /* no check has finished since the endpoint appeared */
    uint32_t passes;   /* in a row */
    uint32_t failures; /* in a row */
} pf_check_state;

/* A new endpoint: pending, healthy unless hc says "initial": "unhealthy". A cluster without
 * active checks (hc->type == PF_CHECK_NONE) stays healthy forever. */
void health_check_init(pf_check_state *s, const pf_config_health_check *hc);

/* Records one finished check and returns true when the verdict changed. The first check
 * decides at once in either direction (an endpoint healthy "until its first check says
 * otherwise", or unhealthy "until proven"); after it, unhealthy_threshold failures in a row
 * take the endpoint out and healthy_threshold passes in a row bring it back. */
bool health_check_record(pf_check_state *s, const pf_config_health_check *hc, bool passed);

/* True when an HTTP status is in one of hc's expected ranges. */
bool health_status_expected(const pf_config_health_check *hc, int status);

/* How long the n-th ejection in a row lasts (n >= 1): base × n, capped at max. */
uint64_t health_ejection_ms(const pf_config_outlier *od, uint32_t times_ejected);

/* The ejection count after `back_ms` of not being ejected: one less per base_ejection_time
 * spent back in service, never below zero. An endpoint that stays good is forgiven; one
 * that fails again soon is ejected for longer. */
uint32_t health_ejections_decayed(const pf_config_outlier *od, uint32_t times_ejected,
                                  uint64_t back_ms);

/* How many of a cluster's `endpoints` may be ejected at the same time:
 * max_ejection_percent of them rounded down, but at least one when there are two or more
 * (so that 10% of a small cluster still ejects its one bad endpoint, as Envoy does), and
 * never the only endpoint of a cluster: ejecting it would turn its errors into 503s. */
size_t health_max_ejected(const pf_config_outlier *od, size_t endpoints);

/* One endpoint's latency as outlier detection sees it (outlier_detection.latency). Workers
 * add each response's latency to the endpoint's shared stats; health takes the sum and count
 * once per outlier tick and folds the window's mean into an average here. */
typedef struct pf_latency_state {
    double average_us;      /* exponentially weighted average of window means */
    uint64_t samples;       /* responses folded in since the endpoint (re)joined */
    uint64_t slow_since_ms; /* when it was last found slow after not being; 0: not slow */
} pf_latency_state;

/* Folds a window of `count` responses whose latencies sum to `sum_us`, `elapsed_ms` after the
 * previous window, into s. The average's time constant is a quarter of lat->interval_ms: a
 * step in latency shows within the first part of the interval, and an old spike has faded
 * long before an endpoint could be ejected for it. The first window sets the average. A
 * window without responses changes nothing. */
void health_latency_add(pf_latency_state *s, const pf_config_outlier_latency *lat, uint64_t sum_us,
                        uint64_t count, uint64_t elapsed_ms);

/* Whether the endpoint has enough responses behind its average to be judged and to count
 * towards the cluster's median. */
bool health_latency_judged(const pf_latency_state *s, const pf_config_outlier_latency *lat);

/* The median of n >= 1 values (the mean of the two middle ones for even n). Sorts values. */
double health_latency_median(double *values, size_t n);

/* Judges s against the cluster's median at now_ms: an average above factor x median is
 * slow, and slow_since_ms remembers since when; anything else clears it. Returns true when
 * the endpoint has been slow for at least lat->interval_ms: time to eject it. */
bool health_latency_slow(pf_latency_state *s, const pf_config_outlier_latency *lat,
                         double median_us, uint64_t now_ms);

#endif
