-- Browser profiles (server/internal/browser): a browser identity, the domains it may
-- visit, and its storage state (cookies and local storage) in numbered versions.
--
-- browser_profiles: one row per profile at its current revision. Allowed domains are a
-- JSON array of lower-case host names and IP addresses; labels a JSON object; proxy a
-- secret reference (secret:NAME[@VERSION]), never a URL. last_state_version is the
-- number the newest state saved got (0: none yet); numbers are never reused, also after
-- a reset.
--
-- browser_profile_states: the state versions of a profile, each sealed like the vault's
-- secret versions: the state under a data key of its own (AES-256-GCM), the data key
-- wrapped under a key derived from a master key, whose id (kek_id) the row names; the
-- associated data of both seals binds the profile id and the version number. No state
-- is ever stored in clear. At most five versions of a profile are kept (the newest
-- ones); dispatch_id is the dispatch whose result carried the state, unique so that a
-- result sent again saves nothing twice. Deleting a profile deletes its states.

-- +goose Up
create table browser_profiles (
    id                  text        primary key,
    name                text        not null,
    description         text        not null default '',
    user_agent          text        not null default '',
    viewport_width      integer     not null,
    viewport_height     integer     not null,
    locale              text        not null default '',
    time_zone           text        not null default '',
    proxy               text        not null default '',
    allowed_domains     jsonb       not null,
    labels              jsonb       not null default '{}',
    revision            bigint      not null default 1,
    last_state_version  bigint      not null default 0,
    created_at          timestamptz not null,
    created_by          text        not null,
    updated_at          timestamptz not null,
    updated_by          text        not null,
    constraint browser_profiles_name check (name ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    constraint browser_profiles_viewport check (viewport_width between 100 and 7680 and viewport_height between 100 and 4320),
    constraint browser_profiles_allowed_domains check (jsonb_typeof(allowed_domains) = 'array' and jsonb_array_length(allowed_domains) >= 1),
    constraint browser_profiles_labels_object check (jsonb_typeof(labels) = 'object'),
    constraint browser_profiles_proxy check (proxy = '' or proxy like 'secret:%'),
    constraint browser_profiles_revision_positive check (revision >= 1),
    constraint browser_profiles_last_state_version check (last_state_version >= 0)
);

create unique index browser_profiles_name on browser_profiles (name);

create table browser_profile_states (
    profile_id        text        not null references browser_profiles (id) on delete cascade,
    version           bigint      not null,
    dispatch_id       text        not null,
    saved_at          timestamptz not null,
    -- The size of the state in clear.
    size_bytes        bigint      not null,
    -- The key-encryption key the data key is wrapped under (identity.KeyEncryptionKey.ID).
    kek_id            text        not null,
    data_key_nonce    bytea       not null,
    wrapped_data_key  bytea       not null,
    value_nonce       bytea       not null,
    ciphertext        bytea       not null,
    primary key (profile_id, version),
    constraint browser_profile_states_version check (version >= 1),
    constraint browser_profile_states_size check (size_bytes >= 0)
);

create unique index browser_profile_states_dispatch on browser_profile_states (profile_id, dispatch_id);
create index browser_profile_states_kek_id on browser_profile_states (kek_id);

-- +goose Down
drop table browser_profile_states;
drop table browser_profiles;
