package outbox

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// State is where a notification stands.
type State uint8

// States of a notification.
const (
	Pending   State = iota + 1 // waiting for delivery
	Delivered                  // the receiver answered 2xx
	Dead                       // failed for good: a dead letter
)

func (s State) String() string {
	switch s {
	case Pending:
		return "pending"
	case Delivered:
		return "delivered"
	case Dead:
		return "dead"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Record is a notification as stored.
type Record struct {
	ID          string          `json:"id"`
	Tenant      string          `json:"tenant,omitempty"`
	Channel     string          `json:"channel"`
	IdemKey     string          `json:"idem_key,omitempty"`
	Fingerprint []byte          `json:"fp,omitempty"`
	Text        string          `json:"text,omitempty"`
	Payload     json.RawMessage `json:"payload,omitempty"` // a JSON object
	State       State           `json:"state"`
	Attempts    int             `json:"attempts,omitempty"`
	LastError   string          `json:"last_error,omitempty"`
	Created     time.Time       `json:"created"` // accepted
	Queued      time.Time       `json:"queued"`  // accepted or re-driven; MaxAge counts from here
	NextAttempt time.Time       `json:"next_attempt,omitzero"`
	Finished    time.Time       `json:"finished,omitzero"`
}

// Buckets of the store:
//
//	records   id → Record (JSON)
//	pending   id → channel          every Pending record
//	dead      id → channel          every Dead record
//	idem      tenant NUL key → id   idempotency keys
//	finished  time(8) id → state    Delivered and Dead records by finish time, for expiry
//
// Ids start with a 16-digit hex sequence number, so byte order is the order
// of acceptance and each channel's queue is rebuilt in order after a restart.
var (
	bRecords  = []byte("records")
	bPending  = []byte("pending")
	bDead     = []byte("dead")
	bIdem     = []byte("idem")
	bFinished = []byte("finished")
)

func createBuckets(tx *bolt.Tx) error {
	for _, name := range [][]byte{bRecords, bPending, bDead, bIdem, bFinished} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	return nil
}

// newID returns a fresh id: the records bucket's next sequence number and
// 8 random bytes (ids are not guessable from one another).
func newID(tx *bolt.Tx) (string, error) {
	seq, err := tx.Bucket(bRecords).NextSequence()
	if err != nil {
		return "", err
	}
	var r [8]byte
	_, _ = rand.Read(r[:]) // crypto/rand.Read never fails on supported platforms
	return fmt.Sprintf("%016x%s", seq, hex.EncodeToString(r[:])), nil
}

func getRecord(tx *bolt.Tx, id string) (*Record, error) {
	v := tx.Bucket(bRecords).Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	r := new(Record)
	if err := json.Unmarshal(v, r); err != nil {
		return nil, fmt.Errorf("outbox: record %s: %w", id, err)
	}
	return r, nil
}

// putRecord stores r and keeps the pending, dead and finished indexes in
// step with its state. prev is the stored version, nil for a new record.
func putRecord(tx *bolt.Tx, prev, r *Record) error {
	id := []byte(r.ID)
	if prev != nil {
		switch prev.State {
		case Pending:
			if err := tx.Bucket(bPending).Delete(id); err != nil {
				return err
			}
		case Dead:
			if err := tx.Bucket(bDead).Delete(id); err != nil {
				return err
			}
		}
		if !prev.Finished.IsZero() {
			if err := tx.Bucket(bFinished).Delete(finishedKey(prev.Finished, prev.ID)); err != nil {
				return err
			}
		}
	}
	switch r.State {
	case Pending:
		if err := tx.Bucket(bPending).Put(id, []byte(r.Channel)); err != nil {
			return err
		}
	case Dead:
		if err := tx.Bucket(bDead).Put(id, []byte(r.Channel)); err != nil {
			return err
		}
	}
	if !r.Finished.IsZero() {
		if err := tx.Bucket(bFinished).Put(finishedKey(r.Finished, r.ID), []byte{byte(r.State)}); err != nil {
			return err
		}
	}
	v, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("outbox: record %s: %w", r.ID, err)
	}
	return tx.Bucket(bRecords).Put(id, v)
}

// deleteRecord removes a finished record and the idempotency key that
// points at it.
func deleteRecord(tx *bolt.Tx, r *Record) error {
	if r.IdemKey != "" {
		k := idemKey(r.Tenant, r.IdemKey)
		if string(tx.Bucket(bIdem).Get(k)) == r.ID {
			if err := tx.Bucket(bIdem).Delete(k); err != nil {
				return err
			}
		}
	}
	if r.State == Dead {
		if err := tx.Bucket(bDead).Delete([]byte(r.ID)); err != nil {
			return err
		}
	}
	if err := tx.Bucket(bFinished).Delete(finishedKey(r.Finished, r.ID)); err != nil {
		return err
	}
	return tx.Bucket(bRecords).Delete([]byte(r.ID))
}

func idemKey(tenant, key string) []byte {
	return []byte(tenant + "\x00" + key)
}

func finishedKey(t time.Time, id string) []byte {
	k := make([]byte, 8, 8+len(id))
	binary.BigEndian.PutUint64(k, uint64(t.UnixNano()))
	return append(k, id...)
}

func finishedTime(k []byte) time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(k[:8])))
}
