-- Users, their profiles, login sessions and API keys.
-- Ids are UUIDv7 as 32-char hex TEXT; timestamps are UTC ISO-8601 TEXT (see embeddb.models).

CREATE TABLE users (
    id             TEXT PRIMARY KEY NOT NULL,
    wallet_address TEXT NOT NULL UNIQUE CHECK (length(wallet_address) BETWEEN 3 AND 128
                                              AND wallet_address = lower(wallet_address)),
    chain_id       INTEGER NOT NULL CHECK (chain_id > 0),
    email          TEXT UNIQUE,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    deleted_at     TEXT
);

CREATE TABLE user_profiles (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    display_name TEXT NOT NULL DEFAULT '',
    bio          TEXT NOT NULL DEFAULT '',
    avatar_url   TEXT,
    settings     TEXT NOT NULL DEFAULT '{}',
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash   TEXT NOT NULL UNIQUE,
    expires_at   TEXT NOT NULL,
    last_seen_at TEXT,
    user_agent   TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    scopes       TEXT NOT NULL DEFAULT '[]',
    rate_limit   INTEGER NOT NULL DEFAULT 60 CHECK (rate_limit > 0),
    last_used_at TEXT,
    expires_at   TEXT,
    revoked_at   TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX api_keys_user_id ON api_keys (user_id);
CREATE INDEX api_keys_expires_at ON api_keys (expires_at);
CREATE INDEX api_keys_revoked_at ON api_keys (revoked_at);
