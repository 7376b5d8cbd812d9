-- Services offered in the marketplace and users' subscriptions to them.
-- Money is integer minor units (6 decimal places, like USDC): never a float.

CREATE TABLE services (
    id              TEXT PRIMARY KEY NOT NULL,
    provider_id     TEXT NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    name            TEXT NOT NULL CHECK (length(name) > 0),
    description     TEXT NOT NULL DEFAULT '',
    category        TEXT NOT NULL,
    pricing_model   TEXT NOT NULL DEFAULT 'per_call'
                    CHECK (pricing_model IN ('free', 'per_call', 'subscription')),
    price           INTEGER NOT NULL DEFAULT 0 CHECK (price >= 0),
    token           TEXT NOT NULL DEFAULT 'USDC',
    endpoint        TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'active'
                    CHECK (status IN ('active', 'inactive', 'deprecated')),
    service_version TEXT NOT NULL DEFAULT '1.0.0',
    metadata        TEXT NOT NULL DEFAULT '{}',
    version         INTEGER NOT NULL DEFAULT 1,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    deleted_at      TEXT,
    UNIQUE (provider_id, name)
);
CREATE INDEX services_category_status ON services (category, status);
CREATE INDEX services_status ON services (status);

CREATE TABLE subscriptions (
    id          TEXT PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    service_id  TEXT NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    tier        TEXT NOT NULL DEFAULT 'basic',
    status      TEXT NOT NULL DEFAULT 'active'
                CHECK (status IN ('active', 'paused', 'cancelled', 'expired')),
    started_at  TEXT NOT NULL,
    ends_at     TEXT,
    usage_count INTEGER NOT NULL DEFAULT 0 CHECK (usage_count >= 0),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (user_id, service_id),
    CHECK (ends_at IS NULL OR ends_at >= started_at)
);
CREATE INDEX subscriptions_service_status ON subscriptions (service_id, status);
