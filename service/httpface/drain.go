package httpface

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Drainer ends long-lived server streams (PerfAdmin's WatchStats) when
// shutdown begins, so that neither the HTTP server's Shutdown nor grpc-go's
// GracefulStop waits its whole timeout for a dashboard that would watch
// forever, and the watcher gets a clean UNAVAILABLE ("shutting down") end
// of stream to reconnect on, instead of a cut connection.
//
// The HTTP server must be shut down before GracefulStop: a stream the
// transcoder still carries when GracefulStop closes the server is cut, and
// its client sees a missing-trailer error.
type Drainer struct {
	methods map[string]bool

	mu       sync.Mutex
	draining bool                        // guarded by mu
	cancels  map[*int]context.CancelFunc // guarded by mu: the open streams
}

// NewDrainer ends streams of the given full methods
// ("/vega.v1.PerfAdminService/WatchStats") on Drain; other streams run to
// their end.
func NewDrainer(fullMethods ...string) *Drainer {
	d := &Drainer{methods: map[string]bool{}, cancels: map[*int]context.CancelFunc{}}
	for _, m := range fullMethods {
		d.methods[m] = true
	}
	return d
}

// errDraining is the stream's end when it was drained.
var errDraining = status.Error(codes.Unavailable, "the gateway is shutting down; reconnect")

// StreamServerInterceptor gives each drained method's stream a context
// that Drain cancels, and turns the handler's resulting cancellation into
// UNAVAILABLE.
func (d *Drainer) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !d.methods[info.FullMethod] {
			return handler(srv, ss)
		}
		ctx, cancel := context.WithCancel(ss.Context())
		defer cancel()
		id := new(int)
		d.mu.Lock()
		if d.draining {
			d.mu.Unlock()
			return errDraining
		}
		d.cancels[id] = cancel
		d.mu.Unlock()
		defer func() {
			d.mu.Lock()
			delete(d.cancels, id)
			d.mu.Unlock()
		}()
		err := handler(srv, &drainStream{ServerStream: ss, ctx: ctx})
		if err != nil && ss.Context().Err() == nil && ctx.Err() != nil {
			return errDraining // we cancelled it, not the caller
		}
		return err
	}
}

// Drain ends the open streams and refuses new ones. It is idempotent.
func (d *Drainer) Drain() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.draining = true
	for _, cancel := range d.cancels {
		cancel()
	}
}

type drainStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *drainStream) Context() context.Context { return s.ctx }
