-- Pairing and device identity: devices, pairing codes, pairing requests (one table, one
-- state machine), and the revocation of device certificates.

-- +goose Up
create table devices (
    id                      text        primary key,
    name                    text        not null,
    platform                text        not null default '',
    agent_version           text        not null default '',
    labels                  jsonb       not null default '{}',
    -- SHA-256 of the SubjectPublicKeyInfo of the key it paired or last renewed with.
    public_key_fingerprint  text        not null,
    created_at              timestamptz not null default now(),
    updated_at              timestamptz not null default now(),
    revoked_at              timestamptz,
    revoked_reason          text        not null default '',
    rotate_requested_at     timestamptz,
    constraint devices_fingerprint_format check (public_key_fingerprint ~ '^sha256:[0-9a-f]{64}$'),
    constraint devices_labels_object check (jsonb_typeof(labels) = 'object')
);

create table pairing_codes (
    id               text        primary key,
    method           text        not null,
    -- HMAC-SHA256 of the code under a key derived from the master key: an 8-digit PIN
    -- could be brute-forced from a plain hash, not from a keyed one.
    code_mac         bytea       not null,
    label            text        not null default '',
    created_by       text        not null,
    created_at       timestamptz not null default now(),
    expires_at       timestamptz not null,
    failed_attempts  integer     not null default 0,
    burned_at        timestamptz,
    deleted_at       timestamptz,
    used_at          timestamptz,
    request_id       text,
    constraint pairing_codes_method check (method in ('pin', 'qr')),
    constraint pairing_codes_mac_length check (octet_length(code_mac) = 32),
    constraint pairing_codes_validity check (expires_at > created_at),
    constraint pairing_codes_used check ((used_at is null) = (request_id is null))
);

create index pairing_codes_active on pairing_codes (method, expires_at)
    where used_at is null and burned_at is null and deleted_at is null;
create index pairing_codes_created_at on pairing_codes (created_at desc, id desc);

create table pairing_requests (
    id                      text        primary key,
    code_id                 text        not null references pairing_codes (id),
    state                   text        not null default 'pending_approval',
    -- SHA-256 of the pairing secret with which the node follows its request.
    secret_hash             bytea       not null,
    csr_der                 bytea       not null,
    public_key_fingerprint  text        not null,
    device_name             text        not null,
    platform                text        not null default '',
    agent_version           text        not null default '',
    source_address          text        not null default '',
    previous_device_id      text,
    created_at              timestamptz not null default now(),
    expires_at              timestamptz not null,
    decided_at              timestamptz,
    decided_by              text        not null default '',
    reason                  text        not null default '',
    device_id               text        references devices (id),
    certificate_der         bytea,
    certificate_fingerprint text,
    labels                  jsonb       not null default '{}',
    completed_at            timestamptz,
    constraint pairing_requests_state check (state in ('pending_approval', 'approved', 'completed', 'rejected', 'expired')),
    constraint pairing_requests_decided check ((state = 'pending_approval') = (decided_at is null)),
    constraint pairing_requests_issued check (
        (state in ('approved', 'completed')) = (device_id is not null and certificate_der is not null)),
    constraint pairing_requests_completed check ((state = 'completed') = (completed_at is not null)),
    constraint pairing_requests_secret_length check (octet_length(secret_hash) = 32),
    constraint pairing_requests_fingerprint_format check (public_key_fingerprint ~ '^sha256:[0-9a-f]{64}$')
);

create index pairing_requests_pending on pairing_requests (expires_at) where state = 'pending_approval';
create index pairing_requests_created_at on pairing_requests (created_at desc, id desc);

-- Decisions are final, whoever writes: pending_approval moves to approved, rejected or
-- expired; approved only to completed; the other states never move.
-- +goose StatementBegin
create function pairing_requests_transition() returns trigger language plpgsql as $$
begin
    if new.state = old.state then
        return new;
    end if;
    if (old.state = 'pending_approval' and new.state in ('approved', 'rejected', 'expired'))
       or (old.state = 'approved' and new.state = 'completed') then
        return new;
    end if;
    raise exception 'pairing request %: % cannot become %', old.id, old.state, new.state
        using errcode = 'check_violation', constraint = 'pairing_requests_transition';
end;
$$;
-- +goose StatementEnd

create trigger pairing_requests_transition
    before update of state on pairing_requests
    for each row execute function pairing_requests_transition();

-- Nodes watch their request on whichever replica they reach; the decision may be taken
-- on another. Every state change is announced on commit.
-- +goose StatementBegin
create function notify_pairing() returns trigger language plpgsql as $$
begin
    perform pg_notify('palyra_pairing', new.id);
    return null;
end;
$$;
-- +goose StatementEnd

create trigger pairing_requests_notify
    after update of state on pairing_requests
    for each row when (new.state is distinct from old.state)
    execute function notify_pairing();

alter table issued_certificates
    add column device_id      text        references devices (id),
    -- When the certificate is (or, after a rotation's grace period, will be) revoked.
    add column revoked_at     timestamptz,
    add column revoked_reason text        not null default '',
    add constraint issued_certificates_device check ((kind = 'device') = (device_id is not null));

create index issued_certificates_device_id on issued_certificates (device_id, issued_at desc) where device_id is not null;
create index issued_certificates_revoked on issued_certificates (revoked_at) where revoked_at is not null;

-- Every replica keeps the revocations in memory to refuse them during the TLS
-- handshake; these triggers tell all of them, through NOTIFY on commit, whoever
-- revoked what.
-- +goose StatementBegin
create function notify_revocation() returns trigger language plpgsql as $$
begin
    if tg_table_name = 'devices' then
        perform pg_notify('palyra_revocations', 'device:' || new.id);
    else
        perform pg_notify('palyra_revocations', 'certificate:' || new.fingerprint);
    end if;
    return null;
end;
$$;
-- +goose StatementEnd

create trigger devices_notify_revocation
    after update of revoked_at on devices
    for each row when (new.revoked_at is distinct from old.revoked_at)
    execute function notify_revocation();

create trigger issued_certificates_notify_revocation
    after update of revoked_at on issued_certificates
    for each row when (new.revoked_at is distinct from old.revoked_at)
    execute function notify_revocation();

-- +goose Down
drop trigger issued_certificates_notify_revocation on issued_certificates;
drop trigger devices_notify_revocation on devices;
drop function notify_revocation;
alter table issued_certificates
    drop constraint issued_certificates_device,
    drop column revoked_reason,
    drop column revoked_at,
    drop column device_id;
drop table pairing_requests;
drop function notify_pairing;
drop function pairing_requests_transition;
drop table pairing_codes;
drop table devices;
