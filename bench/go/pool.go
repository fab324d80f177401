package main

import (
	"context"
	"runtime"
	"sync"
	"time"
)

// A task of the Go pool: a function of its context, as a tether pool op
// receives one.
type task struct {
	ctx context.Context
	fn  func(ctx context.Context)
}

// seedPool is tether's seed pool written in Go: a fixed set of worker
// goroutines reading a buffered channel.
type seedPool struct {
	queue chan task
	wg    sync.WaitGroup
}

func newSeedPool(workers, queue int) *seedPool {
	p := &seedPool{queue: make(chan task, queue)}
	for i := 0; i < workers; i++ {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for t := range p.queue {
				t.fn(t.ctx)
			}
		}()
	}
	return p
}

// trySubmit never blocks: it reports false when the queue is full.  The
// op's context is detached from the parent, as a tether op's is.
func (p *seedPool) trySubmit(parent context.Context, fn func(context.Context)) bool {
	select {
	case p.queue <- task{withoutCancel(parent), fn}:
		return true
	default:
		return false
	}
}

// drain closes the pool and waits for the queued and running tasks.
func (p *seedPool) drain() {
	close(p.queue)
	p.wg.Wait()
}

// benchPool pushes no-op tasks through a pool of 5 workers and a queue of
// 20, retrying a refused submission after runtime.Gosched, and reports
// tasks per second from the first submission to the end of the drain.
func benchPool() {
	const rounds = 5
	n := iters(200000)
	noop := func(context.Context) {}
	parent := context.Background()
	var rates []float64
	for r := 0; r < rounds; r++ {
		p := newSeedPool(5, 20)
		start := time.Now()
		for i := 0; i < n; i++ {
			for !p.trySubmit(parent, noop) {
				runtime.Gosched()
			}
		}
		p.drain()
		rates = append(rates, float64(n)/time.Since(start).Seconds())
	}
	report("pool_tasks_per_s", median(rates))
}
