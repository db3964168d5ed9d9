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
