// Command gobench measures Go's context package, a worker pool of the
// same shape as tether's seed pool, and x/sync's singleflight and errgroup,
// as the peers of tether's benchmarks.
//
// Each result is printed as one line "go.<metric> <value>", the format
// bench/run.sh collects; the unit is in the metric's suffix (_ns: ns per
// operation, _us: microseconds, _ms: milliseconds, _per_s: operations per
// second, _calls: a count).
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

// scale multiplies every iteration count; run.sh uses 1.
var scale = flag.Float64("scale", 1, "multiply iteration counts by this")

// only restricts the run to the benchmarks whose names contain it.
var only = flag.String("only", "", "run only benchmarks whose name contains this")

// report prints one result line.
func report(metric string, value float64) {
	fmt.Printf("go.%s %.6g\n", metric, value)
}

// iters scales an iteration count, keeping at least one iteration.
func iters(n int) int {
	m := int(float64(n) * *scale)
	if m < 1 {
		m = 1
	}
	return m
}

// nsPerOp runs f n times after a warm-up of n/10 runs and returns the
// mean time of one run in nanoseconds.
func nsPerOp(n int, f func()) float64 {
	for i := 0; i < n/10; i++ {
		f()
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		f()
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}

// A benchmark is one named measurement that reports its own lines.
type benchmark struct {
	name string
	run  func()
}

func main() {
	flag.Parse()
	benches := []benchmark{
		{"with_cancel", benchWithCancel},
		{"with_timeout", benchWithTimeout},
		{"detach_bound", benchDetachBound},
		{"value10", benchValue10},
		{"prop_flat", benchPropFlat},
		{"prop_chain", benchPropChain},
		{"pool", benchPool},
		{"singleflight", benchSingleflight},
		{"group2", benchGroup2},
	}
	ran := 0
	for _, b := range benches {
		if *only != "" && !strings.Contains(b.name, *only) {
			continue
		}
		b.run()
		ran++
	}
	if ran == 0 {
		fmt.Fprintf(os.Stderr, "gobench: no benchmark matches %q\n", *only)
		os.Exit(1)
	}
}
