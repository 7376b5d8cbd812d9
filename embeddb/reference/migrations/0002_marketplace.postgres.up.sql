-- Services offered in the marketplace and users' subscriptions to them.
-- Money is integer minor units (6 decimal places, like USDC): never a float.

CREATE TABLE services (
    id              UUID PRIMARY KEY,
    provider_id     UUID NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    name            TEXT NOT NULL CHECK (length(name) > 0),
    description     TEXT NOT NULL DEFAULT '',
    category        TEXT NOT NULL,
    pricing_model   TEXT NOT NULL DEFAULT 'per_call'
                    CHECK (pricing_model IN ('free', 'per_call', 'subscription')),
    price           BIGINT NOT NULL DEFAULT 0 CHECK (price >= 0),
    token           TEXT NOT NULL DEFAULT 'USDC',
    endpoint        TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'active'
                    CHECK (status IN ('active', 'inactive', 'deprecated')),
    service_version TEXT NOT NULL DEFAULT '1.0.0',
    metadata        JSONB NOT NULL DEFAULT '{}',
    version         INTEGER NOT NULL DEFAULT 1,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    deleted_at      TIMESTAMPTZ,
    UNIQUE (provider_id, name)
);
CREATE INDEX services_category_status ON services (category, status);
CREATE INDEX services_status ON services (status);

CREATE TABLE subscriptions (
    id          UUID PRIMARY KEY,
    user_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    service_id  UUID NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    tier        TEXT NOT NULL DEFAULT 'basic',
    status      TEXT NOT NULL DEFAULT 'active'
                CHECK (status IN ('active', 'paused', 'cancelled', 'expired')),
    started_at  TIMESTAMPTZ NOT NULL,
    ends_at     TIMESTAMPTZ,
    usage_count INTEGER NOT NULL DEFAULT 0 CHECK (usage_count >= 0),
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (user_id, service_id),
    CHECK (ends_at IS NULL OR ends_at >= started_at)
);
CREATE INDEX subscriptions_service_status ON subscriptions (service_id, status);
