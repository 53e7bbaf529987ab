// Package connpool is the gateway's one outbound HTTP transport: every
// configured backend (LLM servers, webhooks) shares a Pool, an
// http.RoundTripper over a single *http.Transport that measures the real
// sockets it uses.
//
// # Why it is hand-written
//
// net/http already pools and reuses connections, and Pool leaves that to it.
// What net/http does not offer is what the seed's ConnectionPoolManager
// promised and never did (its "reuse" was bookkeeping of ids that callers
// registered, and it never closed a socket):
//
//   - per-connection statistics: how many are open, carrying a request or
//     idle, their ages, and how often a request really ran on a socket that
//     had carried one before;
//   - retirement by age (ConnTTL) and by error rate (ErrorThreshold over
//     MinRequests), which net/http has no notion of;
//   - a cap on open connections across hosts (MaxTotalConns): the
//     Transport's MaxConnsPerHost is per host, and MaxIdleConns bounds idle
//     connections only.
//
// # How it measures
//
// The Transport dials through Pool, which wraps each net.Conn in a tracked
// connection registered in the pool; closing it, by whoever, unregisters it
// and frees its slot under MaxTotalConns. Every request carries an
// httptrace.ClientTrace (merged with any trace the caller put in the
// context) whose GotConn hook names the socket the request runs on, and the
// response body is wrapped so that the request counts as carried until the
// body is read to EOF or closed. A request is counted as reused when its
// socket carried a request before, which is what the server sees: over N
// requests that opened C connections, the reuse rate is 1 − C/N. This equals
// GotConnInfo.Reused except for one case: net/http also reports Reused for
// the first request on a connection that was dialed for a request served by
// another connection in the meantime, and then pooled.
//
// # When a connection is retired
//
// net/http returns a connection to its idle pool, and may hand it to a
// waiting request, before the previous response body reports EOF, so a
// connection cannot safely be closed "after its body is done": the next
// request may already be writing on it. Pool therefore retires a
// connection that is too old or too error-prone at the moment it is handed
// out again (in GotConn, before anything is written), and its janitor closes
// such connections while they sit idle:
//
//   - for a request whose body can be replayed (no body, or GetBody set, as
//     http.NewRequest does for in-memory bodies), the connection is closed
//     there and then; net/http treats that exactly like a server closing an
//     idle connection and retries the request on another connection;
//   - for a request whose body cannot be replayed, the request goes out on
//     the connection with "Connection: close", so it is the last one the
//     connection carries.
//
// HTTP/2 connections carry many requests at once, so they are retired by
// the janitor only, when no stream is open on them, and by failing their
// reader rather than closing them: the HTTP/2 client then marks the
// connection dead, so that no new stream picks it, before it closes it.
//
// Closing an idle connection (janitor, eviction) can race with net/http
// handing it out, just as a server closing an idle connection can; net/http
// retries such a request when its body can be replayed.
//
// # Unread bodies
//
// net/http reuses a connection only when its response body was read to EOF:
// a body closed unread, even a single byte, costs a new connection. Pool's
// body wrapper, on Close, reads what is left of an HTTP/1 body whose
// Content-Length is at most 4 KiB, so that connection goes back to the
// pool. Larger bodies, and bodies of unknown length (chunked, streamed),
// are not read on Close: the connection is closed, as in net/http.
//
// # The total cap
//
// A dial waits for one of MaxTotalConns slots for as long as the request's
// context allows (net/http detaches dials from request cancellation; Pool
// restores it for the wait, not for the dial itself). While it waits it
// evicts the least recently used idle connection that has been idle for at
// least 10 ms, of any host, so idle connections of one backend cannot
// starve another until they time out.
//
// Host statistics are keyed by the dialed address (host:port); behind a
// proxy, that is the proxy's.
package connpool
