// Package notify posts chat notifications: Slack incoming webhooks and
// generic JSON webhooks.
//
// A sender makes one attempt per Send. Retries, backoff (honouring
// StatusError.RetryAfter) and deduplication belong to the caller's outbox:
// neither Slack incoming webhooks nor generic webhooks offer an idempotency
// key, so a retry after an ambiguous failure (timeout, reset after the
// request was written) may post twice. Every request carries Message.ID
// (the notification's id, the same on every attempt) as an
// Idempotency-Key header, so a receiver that keeps the keys it has seen
// can drop the duplicate; Slack ignores it.
//
// Webhook URLs are credentials (a Slack URL's path is its secret token).
// No error built here contains the URL, its host, its path or any part of
// them: errors name the sender instead, transport errors go through
// integrations.ClassifyTransportError, and upstream reasons are kept only
// when they are short, plain and contain no part of the URL.
package notify
