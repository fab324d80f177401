package main

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"
)

// benchSingleflight starts 1,000 goroutines that call Do on one key at
// once (released together by closing a channel); the function returns
// once every caller has entered Do, so that all of them share its one
// run, as tether's benchmark does with tt_flight_waiting (x/sync has no
// count of a call's waiters: each caller counts itself just before Do,
// and the function then yields a few times, so that the last ones are in
// Do's wait).  It reports how many times the function ran and the wall
// time until every caller returned (medians over the rounds).
func benchSingleflight() {
	const rounds = 11
	const callers = 1000
	var walls, calls []float64
	for r := 0; r < rounds; r++ {
		var g singleflight.Group
		var ran, entered int64
		var ready, done sync.WaitGroup
		gate := make(chan struct{})
		parent := context.Background()
		fn := func() (any, error) {
			atomic.AddInt64(&ran, 1)
			ctx, cancel := context.WithTimeout(withoutCancel(parent), time.Second)
			defer cancel()
			for atomic.LoadInt64(&entered) < callers && ctx.Err() == nil {
				runtime.Gosched()
			}
			for i := 0; i < 10; i++ {
				runtime.Gosched()
			}
			return 42, nil
		}
		ready.Add(callers)
		done.Add(callers)
		for i := 0; i < callers; i++ {
			go func() {
				defer done.Done()
				ready.Done()
				<-gate
				atomic.AddInt64(&entered, 1)
				if v, err, _ := g.Do("key", fn); err != nil || v.(int) != 42 {
					panic("singleflight: wrong result")
				}
			}()
		}
		ready.Wait()
		start := time.Now()
		close(gate)
		done.Wait()
		walls = append(walls, float64(time.Since(start).Nanoseconds())/1e6)
		calls = append(calls, float64(atomic.LoadInt64(&ran)))
	}
	report("sf_wall_ms", median(walls))
	report("sf_calls", median(calls))
}

// benchGroup2 measures errgroup.WithContext, two no-op tasks and Wait.
func benchGroup2() {
	bg := context.Background()
	noop := func() error { return nil }
	report("group2_ns", nsPerOp(iters(300000), func() {
		g, _ := errgroup.WithContext(bg)
		g.Go(noop)
		g.Go(noop)
		if g.Wait() != nil {
			panic("group2: unexpected error")
		}
	}))
}
