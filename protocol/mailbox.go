package protocol

// MaxMailboxPayload is the verifier cap for rec_type 0x80–0x8F payloads (§9.3).
const MaxMailboxPayload = 512
