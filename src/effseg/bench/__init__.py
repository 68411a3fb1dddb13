"""The benchmarks' engine: latency timer, system info, runtime runners, model tables, reports and
the Pareto plot (`effseg bench`, `effseg models`)."""
