-- Pairing hardening (issue 10): wrong PINs are counted per source address, so that one
-- address cannot burn the PIN codes of everybody; a request that names an existing
-- device records whether the node proved it holds that device's key.

-- +goose Up
-- One row per wrong PIN that was counted: the address it came from and when. A PIN
-- names no code, so an address's failures count while any PIN code usable now was
-- usable; rows older than the longest code lifetime (24 h) count for nothing and are
-- deleted by the sweeper.
create table pairing_pin_failures (
    source_address text        not null,
    failed_at      timestamptz not null
);

create index pairing_pin_failures_address on pairing_pin_failures (source_address, failed_at);
create index pairing_pin_failures_failed_at on pairing_pin_failures (failed_at);

-- device_claim is what previous_device_id amounted to when last evaluated (at the start,
-- then at the approval): new, proven (the node signed the request with the key of the
-- device's newest certificate, possession_*), unproven or revoked. The last two need the
-- approver's explicit choice.
alter table pairing_requests
    add column device_claim                       text not null default 'new',
    add column possession_certificate_fingerprint text,
    add column possession_key_fingerprint         text,
    add constraint pairing_requests_device_claim check (device_claim in ('new', 'proven', 'unproven', 'revoked')),
    add constraint pairing_requests_possession check (
        (possession_certificate_fingerprint is null) = (possession_key_fingerprint is null));

-- +goose Down
alter table pairing_requests
    drop constraint pairing_requests_possession,
    drop constraint pairing_requests_device_claim,
    drop column possession_key_fingerprint,
    drop column possession_certificate_fingerprint,
    drop column device_claim;
drop table pairing_pin_failures;
