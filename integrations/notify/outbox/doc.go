// Package outbox is the durable notification queue behind NotifyService:
// accepted means recorded, and every recorded notification is delivered or
// dead-lettered, across crashes and restarts.
//
// Two stores keep these promises and pass the same contract tests: Outbox,
// a bbolt file for a single gateway (below), and Postgres, one PostgreSQL
// database shared by a fleet, where any replica may be lost without losing
// a notification (see Postgres). Their workers decide the outcome of an
// attempt the same way (send and decide in worker.go).
//
// A notification is written to a bbolt database and fsynced before Submit
// returns. Writes go through one committer goroutine that makes every write
// waiting at that moment durable with a single fsync (group commit, the
// seed's "batch operations"): it flushes when MaxBatch writes are waiting,
// when FlushInterval has passed since the first of them, or at once when
// FlushInterval is zero. bbolt's own DB.Batch does group commit too, but it
// always sleeps its MaxBatchDelay when a batch is not full (a lone caller
// pays the whole delay), reports nothing about its batches, and hands a
// failed batch back by re-running each function; the committer here is a
// small loop that answers those three needs (see commit.go).
//
// Each channel has one worker that sends its queue in order of acceptance:
//   - pacing with a token bucket (Slack allows about one message per second
//     per webhook, with short bursts);
//   - 429 and 503 with Retry-After pause the channel for at least that long;
//   - 5xx, 408, timeouts and network errors pause the channel with
//     exponential backoff and jitter (growing with the channel's failures in
//     a row, so a receiver that is down gets one probe per pause);
//   - order is kept through outages (429, 502, 503, 504, 408, timeouts and
//     network errors keep the message at the head), but after a 500, which
//     may be this message's own fault, the message moves behind the others:
//     one message that keeps failing does not hold up the channel;
//   - other 4xx (404 webhook gone, 400 invalid payload, ...) are permanent:
//     the notification becomes a dead letter, kept and re-drivable;
//   - a notification still failing after MaxAge is dead-lettered too.
//
// Duplicate window. A delivery is recorded after the receiver answers 2xx.
// If the process dies between that answer and the commit that records it
// (one fsync, a few milliseconds), the notification is sent again after the
// restart. The same holds for an attempt that was cut off without an answer
// (timeout, reset after the request was written, shutdown deadline): the
// receiver may have posted it, and it is sent again. Slack incoming webhooks
// and generic webhooks take no idempotency key, so the gateway cannot close
// this window; it keeps it to the width of one commit.
package outbox
