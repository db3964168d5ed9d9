-- Access control: users, API tokens, console sessions, feature flags and the audit log.

-- +goose Up
create table users (
    id          text        primary key,
    name        text        not null,
    role        text        not null,
    created_at  timestamptz not null default now(),
    constraint users_name_unique unique (name),
    constraint users_role check (role in ('owner', 'admin', 'operator'))
);

create table api_tokens (
    id                     text        primary key,
    label                  text        not null,
    user_id                text        not null references users (id),
    role                   text        not null,
    -- Empty: all of the role's permissions; else the subset the token is limited to.
    scopes                 text[]      not null default '{}',
    -- SHA-256 over the id and the secret; the secret itself is never stored.
    secret_hash            bytea       not null,
    rate_limit_per_minute  integer     not null default 120,
    -- Generic cell rate algorithm: the theoretical arrival time of the next call. One
    -- row shared by every replica is what makes the limit hold across them.
    rate_tat               timestamptz not null default 'epoch',
    created_at             timestamptz not null default now(),
    created_by             text        not null,
    expires_at             timestamptz,
    revoked_at             timestamptz,
    revoked_reason         text        not null default '',
    last_used_at           timestamptz,
    rotated_from           text        references api_tokens (id),
    constraint api_tokens_role check (role in ('owner', 'admin', 'operator')),
    constraint api_tokens_rate_limit_range check (rate_limit_per_minute between 1 and 100000),
    constraint api_tokens_secret_hash_length check (octet_length(secret_hash) = 32),
    constraint api_tokens_label_length check (char_length(label) between 1 and 64),
    constraint api_tokens_rotated_from_unique unique (rotated_from)
);

create index api_tokens_created_at on api_tokens (created_at desc, id desc);

create table sessions (
    id            text        primary key,
    token_id      text        not null references api_tokens (id),
    secret_hash   bytea       not null,
    csrf_hash     bytea       not null,
    created_at    timestamptz not null default now(),
    last_seen_at  timestamptz not null default now(),
    expires_at    timestamptz not null,
    ended_at      timestamptz,
    constraint sessions_secret_hash_length check (octet_length(secret_hash) = 32),
    constraint sessions_csrf_hash_length check (octet_length(csrf_hash) = 32)
);

create index sessions_token_id on sessions (token_id) where ended_at is null;

create table feature_flags (
    key         text        primary key,
    enabled     boolean     not null,
    updated_at  timestamptz not null default now(),
    updated_by  text        not null
);

create table audit_events (
    sequence        bigint      primary key,
    id              text        not null,
    occurred_at     timestamptz not null,
    principal       text        not null,
    procedure       text        not null,
    target          text        not null,
    outcome         text        not null,
    code            text        not null,
    remote_address  text        not null,
    request_id      text        not null,
    -- SHA-256 over prev_hash and this row's fields; the first row's prev_hash is 32 zero
    -- bytes. Editing or deleting a row breaks the chain after it.
    prev_hash       bytea       not null,
    hash            bytea       not null,
    constraint audit_events_id_unique unique (id),
    constraint audit_events_sequence_positive check (sequence > 0),
    constraint audit_events_outcome check (outcome in ('success', 'failure')),
    constraint audit_events_hash_length check (octet_length(hash) = 32 and octet_length(prev_hash) = 32)
);

create index audit_events_occurred_at on audit_events (occurred_at);
create index audit_events_principal on audit_events (principal, sequence);

-- The log is append-only: palyrad never updates or deletes a row, and this trigger
-- refuses it to anyone else who does not first disable it. The hash chain detects
-- what gets past it.
-- +goose StatementBegin
create function audit_events_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'audit_events is append-only' using errcode = 'insufficient_privilege';
end;
$$;
-- +goose StatementEnd

create trigger audit_events_append_only
    before update or delete on audit_events
    for each row execute function audit_events_append_only();

create trigger audit_events_no_truncate
    before truncate on audit_events
    for each statement execute function audit_events_append_only();

-- +goose Down
drop table audit_events;
drop function audit_events_append_only;
drop table feature_flags;
drop table sessions;
drop table api_tokens;
drop table users;
