package crypto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// Key file format
//
// A node key file is a PEM file holding exactly one "PRIVATE KEY" block: the
// Ed25519 key as PKCS#8 (RFC 8410), the same format `openssl genpkey
// -algorithm ed25519` writes, so keys can be inspected and created with
// standard tools. Nothing but whitespace may follow the block. Files are
// written atomically (temporary file, fsync, rename, directory fsync) with
// mode 0600, and loading refuses files readable or writable by group or
// others, since anyone who can read the file can impersonate the node.

const pemTypePrivateKey = "PRIVATE KEY"

// maxKeyFileSize bounds what LoadKeyFile reads; a PEM Ed25519 key is ~120 bytes.
const maxKeyFileSize = 64 * 1024

// Key file errors; the returned errors wrap one of these.
var (
	ErrKeyFileNotFound = errors.New("crypto: key file not found")
	ErrKeyFileCorrupt  = errors.New("crypto: key file corrupt")
	ErrKeyFileInsecure = errors.New("crypto: key file permissions too open")
	ErrKeyFileExists   = errors.New("crypto: key file already exists")
)

// EncodeKeyFile returns the PEM/PKCS#8 encoding of priv.
func EncodeKeyFile(priv ed25519.PrivateKey) ([]byte, error) {
	if err := checkPrivateKey(priv); err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("crypto: encode PKCS#8: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemTypePrivateKey, Bytes: der}), nil
}

// DecodeKeyFile parses the contents of a key file.
func DecodeKeyFile(data []byte) (ed25519.PrivateKey, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block", ErrKeyFileCorrupt)
	}
	if block.Type != pemTypePrivateKey {
		return nil, fmt.Errorf("%w: PEM block type %q, want %q", ErrKeyFileCorrupt, block.Type, pemTypePrivateKey)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: trailing data after the PEM block", ErrKeyFileCorrupt)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: PKCS#8: %w", ErrKeyFileCorrupt, err)
	}
	priv, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: holds a %T key, want Ed25519", ErrKeyFileCorrupt, key)
	}
	if err := checkPrivateKey(priv); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyFileCorrupt, err)
	}
	return priv, nil
}

// LoadKeyFile reads an Ed25519 key file written by GenerateKeyFile or WriteKeyFile.
func LoadKeyFile(path string) (ed25519.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s: %w", ErrKeyFileNotFound, path, err)
		}
		return nil, fmt.Errorf("crypto: open key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("crypto: stat key file %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrKeyFileCorrupt, path)
	}
	if runtime.GOOS != "windows" && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o, want 0600 (chmod 600 %s)", ErrKeyFileInsecure, path, st.Mode().Perm(), path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("crypto: read key file %s: %w", path, err)
	}
	if len(data) > maxKeyFileSize {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrKeyFileCorrupt, path, maxKeyFileSize)
	}
	priv, err := DecodeKeyFile(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return priv, nil
}

// GenerateKeyFile creates a new Ed25519 key and writes it to path (creating
// the parent directory with mode 0700 if needed). It never overwrites an
// existing file.
func GenerateKeyFile(path string) (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("crypto: generate Ed25519 key: %w", err)
	}
	if err := WriteKeyFile(path, priv); err != nil {
		return nil, err
	}
	return priv, nil
}

// LoadOrCreateKeyFile loads the key at path, or generates one there if the
// file does not exist; created reports which happened.
func LoadOrCreateKeyFile(path string) (key ed25519.PrivateKey, created bool, err error) {
	key, err = LoadKeyFile(path)
	if err == nil || !errors.Is(err, ErrKeyFileNotFound) {
		return key, false, err
	}
	key, err = GenerateKeyFile(path)
	if errors.Is(err, ErrKeyFileExists) {
		// Another process created it between our load and our write.
		key, err = LoadKeyFile(path)
		return key, false, err
	}
	return key, err == nil, err
}

// WriteKeyFile atomically writes priv to path with mode 0600. It fails with
// ErrKeyFileExists rather than replace an existing key.
func WriteKeyFile(path string, priv ed25519.PrivateKey) error {
	data, err := EncodeKeyFile(priv)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("crypto: create key directory %s: %w", dir, err)
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%w: %s", ErrKeyFileExists, path)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("crypto: create temporary key file in %s: %w", dir, err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // no-op after a successful link/rename
	if err := tmp.Chmod(0o600); err != nil && runtime.GOOS != "windows" {
		tmp.Close()
		return fmt.Errorf("crypto: chmod temporary key file: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("crypto: write temporary key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("crypto: fsync temporary key file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("crypto: close temporary key file: %w", err)
	}
	// A hard link publishes the file atomically and fails if path exists,
	// so two concurrent generators cannot overwrite each other's key.
	if err := os.Link(tmpName, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s", ErrKeyFileExists, path)
		}
		// Filesystems without hard links: rename (the Lstat above guards overwrite).
		if err := os.Rename(tmpName, path); err != nil {
			return fmt.Errorf("crypto: install key file %s: %w", path, err)
		}
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // persist the directory entry; unsupported on some platforms
		d.Close()
	}
	return nil
}
