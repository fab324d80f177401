package main

import (
	"context"
	"runtime"
	"sort"
	"time"
)

// withoutCancelCtx is Go 1.21's context.WithoutCancel, which Go 1.19 lacks:
// it keeps the parent's values and drops its cancellation and deadline.
type withoutCancelCtx struct {
	parent context.Context
}

// withoutCancel returns a context that is never canceled and has no
// deadline, but looks values up in 'parent'.
func withoutCancel(parent context.Context) context.Context {
	if parent == nil {
		panic("cannot create context from nil parent")
	}
	return withoutCancelCtx{parent}
}

func (withoutCancelCtx) Deadline() (deadline time.Time, ok bool) { return }
func (withoutCancelCtx) Done() <-chan struct{}                   { return nil }
func (withoutCancelCtx) Err() error                              { return nil }
func (c withoutCancelCtx) Value(key any) any                     { return c.parent.Value(key) }

// benchWithCancel measures context.WithCancel on the background context
// followed by its cancel.
func benchWithCancel() {
	bg := context.Background()
	report("with_cancel_ns", nsPerOp(iters(2000000), func() {
		_, cancel := context.WithCancel(bg)
		cancel()
	}))
}

// benchWithTimeout measures context.WithTimeout (an hour, so the timer
// never fires) followed by its cancel, which stops the timer.
func benchWithTimeout() {
	bg := context.Background()
	report("with_timeout_ns", nsPerOp(iters(1000000), func() {
		_, cancel := context.WithTimeout(bg, time.Hour)
		cancel()
	}))
}

// benchDetachBound measures the detached shape tether is built around:
// WithTimeout(WithoutCancel(parent)) and its cancel, with a live
// cancelable parent.
func benchDetachBound() {
	parent, stop := context.WithCancel(context.Background())
	defer stop()
	report("detach_bound_ns", nsPerOp(iters(1000000), func() {
		_, cancel := context.WithTimeout(withoutCancel(parent), time.Hour)
		cancel()
	}))
}

// benchKey is the type of the value keys, as Go's documentation advises.
type benchKey int

// sink keeps lookups from being optimised away.
var sink any

// benchValue10 looks up a key held by the outermost of ten WithValue
// layers, so the lookup walks all ten.
func benchValue10() {
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		ctx = context.WithValue(ctx, benchKey(i), i)
	}
	report("value10_ns", nsPerOp(iters(5000000), func() {
		sink = ctx.Value(benchKey(0))
	}))
	if sink.(int) != 0 {
		panic("value10: wrong value")
	}
}

// propRounds is how many trees each propagation benchmark builds and
// cancels; the median round is reported.
const propRounds = 15

// median returns the median of 'xs' (sorted in place).
func median(xs []float64) float64 {
	sort.Float64s(xs)
	return xs[len(xs)/2]
}

// timeCancel cancels a tree through 'cancel' and returns how long the
// call took, checking that every leaf in 'leaves' is done afterwards.
func timeCancel(cancel context.CancelFunc, leaves []context.Context) float64 {
	runtime.GC()
	start := time.Now()
	cancel()
	el := time.Since(start)
	for _, c := range leaves {
		if c.Err() == nil {
			panic("propagation: a descendant is still live")
		}
	}
	return float64(el.Nanoseconds()) / 1e3
}

// benchPropFlat cancels a parent with 10,000 direct children.  Each
// child's Done channel is made first, as a waiter would, so that the
// cancel closes 10,000 channels.
func benchPropFlat() {
	var us []float64
	for r := 0; r < propRounds; r++ {
		root, cancel := context.WithCancel(context.Background())
		kids := make([]context.Context, 10000)
		stops := make([]context.CancelFunc, 10000)
		for i := range kids {
			kids[i], stops[i] = context.WithCancel(root)
			kids[i].Done()
		}
		us = append(us, timeCancel(cancel, kids))
		for _, s := range stops {
			s()
		}
	}
	report("prop_flat_us", median(us))
}

// benchPropChain cancels a root with 100 chains of 100 nested contexts
// each (10,000 descendants).
func benchPropChain() {
	var us []float64
	for r := 0; r < propRounds; r++ {
		root, cancel := context.WithCancel(context.Background())
		var all []context.Context
		var stops []context.CancelFunc
		for c := 0; c < 100; c++ {
			ctx := root
			for d := 0; d < 100; d++ {
				var stop context.CancelFunc
				ctx, stop = context.WithCancel(ctx)
				ctx.Done()
				all = append(all, ctx)
				stops = append(stops, stop)
			}
		}
		us = append(us, timeCancel(cancel, all))
		for _, s := range stops {
			s()
		}
	}
	report("prop_chain_us", median(us))
}
