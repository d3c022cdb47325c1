/* Pure health decisions: see verdict.h for the rules and why. */
#include "health/verdict.h"

#include <math.h>
#include <stdlib.h>

void health_check_init(pf_check_state *s, const pf_config_health_check *hc) {
    s->pending = hc->type != PF_CHECK_NONE;
    s->healthy = hc->type == PF_CHECK_NONE || hc->initial_healthy;
    s->passes = 0;
    s->failures = 0;
}

bool health_check_record(pf_check_state *s, const pf_config_health_check *hc, bool passed) {
    bool was = s->healthy;
    if (passed) {
        s->passes++;
        s->failures = 0;
    } else {
        s->failures++;
        s->passes = 0;
    }
    if (s->pending) {
        s->pending = false;
        s->healthy = passed;
    } else if (passed && s->passes >= hc->healthy_threshold) {
        s->healthy = true;
    } else if (!passed && s->failures >= hc->unhealthy_threshold) {
        s->healthy = false;
    }
    return s->healthy != was;
}

bool health_status_expected(const pf_config_health_check *hc, int status) {
    for (size_t i = 0; i < hc->expected_count; i++)
        if (status >= hc->expected[i].lo && status <= hc->expected[i].hi)
            return true;
    return false;
}

uint64_t health_ejection_ms(const pf_config_outlier *od, uint32_t times_ejected) {
    uint64_t n = times_ejected ? times_ejected : 1;
    /* compared by division so that base × n cannot overflow */
    if (od->base_ejection_time_ms && n > od->max_ejection_time_ms / od->base_ejection_time_ms)
        return od->max_ejection_time_ms;
    uint64_t ms = od->base_ejection_time_ms * n;
    return ms < od->max_ejection_time_ms ? ms : od->max_ejection_time_ms;
}

uint32_t health_ejections_decayed(const pf_config_outlier *od, uint32_t times_ejected,
                                  uint64_t back_ms) {
    if (!od->base_ejection_time_ms)
        return 0;
    uint64_t forgiven = back_ms / od->base_ejection_time_ms;
    return forgiven >= times_ejected ? 0 : times_ejected - (uint32_t)forgiven;
}

size_t health_max_ejected(const pf_config_outlier *od, size_t endpoints) {
    if (endpoints < 2)
        return 0;
    size_t by_percent = endpoints * od->max_ejection_percent / 100;
    return by_percent ? by_percent : 1;
}

void health_latency_add(pf_latency_state *s, const pf_config_outlier_latency *lat, uint64_t sum_us,
                        uint64_t count, uint64_t elapsed_ms) {
    if (!count)
        return;
    double mean = (double)sum_us / (double)count;
    if (!s->samples) {
        s->average_us = mean;
    } else {
        double tau = (double)lat->interval_ms / 4.0;
        double keep = tau > 0 ? exp(-(double)elapsed_ms / tau) : 0.0;
        s->average_us = s->average_us * keep + mean * (1.0 - keep);
    }
    s->samples += count;
}

bool health_latency_judged(const pf_latency_state *s, const pf_config_outlier_latency *lat) {
    return s->samples && s->samples >= lat->min_requests;
}

static int compare_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double health_latency_median(double *values, size_t n) {
    if (!n)
        return 0.0;
    qsort(values, n, sizeof *values, compare_double);
    return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2.0;
}

bool health_latency_slow(pf_latency_state *s, const pf_config_outlier_latency *lat,
                         double median_us, uint64_t now_ms) {
    if (!(s->average_us > (double)lat->factor * median_us)) {
        s->slow_since_ms = 0;
        return false;
    }
    if (!s->slow_since_ms)
        s->slow_since_ms = now_ms ? now_ms : 1;
    return now_ms - s->slow_since_ms >= lat->interval_ms;
}
