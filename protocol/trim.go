package protocol

import "fmt"

// TrimFindNodeResp drops contacts from the end while the canonical body
// exceeds ResponseBodyBudget and more than one contact remains (wire.md §6.4).
// It returns ErrTooLarge (with b trimmed as far as allowed) if the body still
// does not fit; the caller may still send it, as the reference does.
func TrimFindNodeResp(b *BodyFindNodeResp) error {
	for {
		enc, err := EncodeBody(*b)
		if err != nil {
			return err
		}
		if len(enc) <= ResponseBodyBudget {
			return nil
		}
		if len(b.Nodes) <= 1 {
			return fmt.Errorf("%w: find_node_resp body %d bytes exceeds budget %d", ErrTooLarge, len(enc), ResponseBodyBudget)
		}
		b.Nodes = b.Nodes[:len(b.Nodes)-1]
	}
}

// TrimFindValueResp trims in the reference's order (wire.md §6.6): drop the
// last contact while more than one remains; then drop the oldest (first)
// record while more than one remains; then drop the legacy record (key 2).
// It returns ErrTooLarge if the body still exceeds the budget.
func TrimFindValueResp(b *BodyFindValueResp) error {
	for {
		enc, err := EncodeBody(*b)
		if err != nil {
			return err
		}
		if len(enc) <= ResponseBodyBudget {
			return nil
		}
		switch {
		case len(b.Nodes) > 1:
			b.Nodes = b.Nodes[:len(b.Nodes)-1]
		case len(b.Records) > 1:
			b.Records = b.Records[1:]
		case b.Record != nil:
			b.Record = nil
		default:
			return fmt.Errorf("%w: find_value_resp body %d bytes exceeds budget %d", ErrTooLarge, len(enc), ResponseBodyBudget)
		}
	}
}
