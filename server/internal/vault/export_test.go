package vault

// Caching reports whether v serves resolutions from memory: Run listens.
func Caching(v *Vault) bool {
	v.cache.mu.RLock()
	defer v.cache.mu.RUnlock()
	return v.cache.enabled
}
