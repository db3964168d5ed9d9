-- Pairing hardening (issue 10): wrong PINs are counted per source address, so that one
-- address cannot burn the PIN codes of everybody.

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

-- +goose Down
drop table pairing_pin_failures;
