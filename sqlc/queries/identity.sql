-- name: GetActiveAuthority :one
select *
from certificate_authorities
where active;

-- name: InsertAuthority :one
-- Inserts the first active authority. When another replica won the race, nothing is
-- inserted and the query returns no row; the caller then reads the winner's.
insert into certificate_authorities (
    id, subject, certificate_der, fingerprint, key_ciphertext, key_nonce, kek_id,
    not_before, not_after
) values (
    sqlc.arg('id'), sqlc.arg('subject'), sqlc.arg('certificate_der'), sqlc.arg('fingerprint'),
    sqlc.arg('key_ciphertext'), sqlc.arg('key_nonce'), sqlc.arg('kek_id'),
    sqlc.arg('not_before'), sqlc.arg('not_after')
)
on conflict (active) where active do nothing
returning *;

-- name: InsertIssuedCertificate :exec
insert into issued_certificates (
    serial, fingerprint, authority_id, kind, subject, dns_names, ip_addresses, uris,
    not_before, not_after, issued_by_replica, device_id
) values (
    sqlc.arg('serial'), sqlc.arg('fingerprint'), sqlc.arg('authority_id'), sqlc.arg('kind'),
    sqlc.arg('subject'), sqlc.arg('dns_names'), sqlc.arg('ip_addresses'), sqlc.arg('uris'),
    sqlc.arg('not_before'), sqlc.arg('not_after'), sqlc.arg('issued_by_replica'), sqlc.narg('device_id')
);

-- name: GetIssuedCertificate :one
select *
from issued_certificates
where fingerprint = sqlc.arg('fingerprint');

-- name: GetActiveAuthorityKEK :one
-- The key-encryption key the active authority's key is sealed under now.
select kek_id from certificate_authorities where active;

-- name: CountAuthorityKeysByKEK :many
-- How many authority keys each key-encryption key seals.
select kek_id, count(*)::bigint as keys
from certificate_authorities
group by kek_id
order by kek_id;

-- name: LockAuthoritiesToRewrap :many
-- Up to page_limit authorities whose key is sealed under another key-encryption key
-- than kek_id, locked until the transaction ends.
select *
from certificate_authorities
where kek_id <> sqlc.arg('kek_id')::text
order by id
limit sqlc.arg('page_limit')
for update;

-- name: RewrapAuthorityKey :execrows
-- Replaces an authority's sealed key by the same key sealed under another
-- key-encryption key, unless it was re-wrapped meanwhile.
update certificate_authorities
set kek_id = sqlc.arg('kek_id'), key_nonce = sqlc.arg('key_nonce'), key_ciphertext = sqlc.arg('key_ciphertext')
where id = sqlc.arg('id') and kek_id = sqlc.arg('old_kek_id');
