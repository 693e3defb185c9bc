/* The two clocks the daemon reads: monotonic milliseconds for intervals, timeouts and rates
 * (never jumps), and wall-clock milliseconds since the epoch for what users see (`ts` in Redis,
 * snapshot times, log timestamps). Nothing below the daemon reads a clock: the engine runs on
 * event time only, so replay and the daemon give the same numbers. */
#ifndef PD_CLOCK_H
#define PD_CLOCK_H

#include <stdint.h>

int64_t pd_clock_mono_ms(void);
int64_t pd_clock_mono_us(void);
/* Monotonic seconds with sub-millisecond resolution, for timing work (replay, benchmarks). */
double pd_clock_mono_s(void);
int64_t pd_clock_wall_ms(void);

#endif
