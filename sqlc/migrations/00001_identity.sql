-- The internal certificate authority and the certificates it issues.

-- +goose Up
create table certificate_authorities (
    id               text        primary key,
    -- Exactly one authority is active; a later rotation adds rows and retires old ones.
    active           boolean     not null default true,
    subject          text        not null,
    certificate_der  bytea       not null,
    -- SHA-256 of certificate_der, "sha256:<hex>"; what clients pin.
    fingerprint      text        not null,
    -- PKCS#8 private key sealed with AES-256-GCM under the key-encryption key; the
    -- associated data binds it to this row's id.
    key_ciphertext   bytea       not null,
    key_nonce        bytea       not null,
    -- Which key-encryption key sealed it (a fingerprint of the master key, not the key).
    kek_id           text        not null,
    not_before       timestamptz not null,
    not_after        timestamptz not null,
    created_at       timestamptz not null default now(),
    constraint certificate_authorities_fingerprint_unique unique (fingerprint),
    constraint certificate_authorities_fingerprint_format check (fingerprint ~ '^sha256:[0-9a-f]{64}$'),
    constraint certificate_authorities_validity check (not_after > not_before),
    constraint certificate_authorities_nonce_length check (octet_length(key_nonce) = 12)
);

create unique index certificate_authorities_one_active
    on certificate_authorities (active) where active;

create table issued_certificates (
    serial             text        primary key,
    fingerprint        text        not null,
    authority_id       text        not null references certificate_authorities (id),
    kind               text        not null,
    subject            text        not null,
    dns_names          text[]      not null default '{}',
    ip_addresses       text[]      not null default '{}',
    uris               text[]      not null default '{}',
    not_before         timestamptz not null,
    not_after          timestamptz not null,
    issued_by_replica  text        not null,
    issued_at          timestamptz not null default now(),
    constraint issued_certificates_fingerprint_unique unique (fingerprint),
    constraint issued_certificates_fingerprint_format check (fingerprint ~ '^sha256:[0-9a-f]{64}$'),
    constraint issued_certificates_serial_format check (serial ~ '^[0-9a-f]{1,40}$'),
    constraint issued_certificates_kind check (kind in ('server', 'device')),
    constraint issued_certificates_validity check (not_after > not_before)
);

create index issued_certificates_authority_issued_at
    on issued_certificates (authority_id, issued_at);

-- +goose Down
drop table issued_certificates;
drop table certificate_authorities;
