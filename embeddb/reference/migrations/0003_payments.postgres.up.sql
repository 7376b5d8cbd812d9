-- Payments between users for services, ratings of completed payments, and invoices.

CREATE TABLE transactions (
    id           UUID PRIMARY KEY,
    buyer_id     UUID NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    seller_id    UUID REFERENCES users (id) ON DELETE RESTRICT,
    service_id   UUID REFERENCES services (id) ON DELETE SET NULL,
    amount       BIGINT NOT NULL CHECK (amount >= 0),
    token        TEXT NOT NULL,
    chain_id     INTEGER NOT NULL CHECK (chain_id > 0),
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'completed', 'failed', 'refunded')),
    tx_hash      TEXT NOT NULL UNIQUE,
    confirmed_at TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    CHECK (seller_id IS NOT NULL OR service_id IS NOT NULL)
);
CREATE INDEX transactions_buyer_created ON transactions (buyer_id, created_at);
CREATE INDEX transactions_seller ON transactions (seller_id);
CREATE INDEX transactions_service_status ON transactions (service_id, status);

CREATE TABLE ratings (
    id             UUID PRIMARY KEY,
    transaction_id UUID NOT NULL UNIQUE REFERENCES transactions (id) ON DELETE CASCADE,
    user_id        UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    service_id     UUID NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    score          INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
    title          TEXT NOT NULL DEFAULT '',
    body           TEXT NOT NULL DEFAULT '',
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX ratings_service ON ratings (service_id);
CREATE INDEX ratings_user ON ratings (user_id);

CREATE TABLE invoices (
    id         UUID PRIMARY KEY,
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    number     TEXT NOT NULL UNIQUE,
    items      JSONB NOT NULL DEFAULT '[]',
    amount     BIGINT NOT NULL CHECK (amount >= 0),
    status     TEXT NOT NULL DEFAULT 'open'
               CHECK (status IN ('draft', 'open', 'paid', 'void', 'overdue')),
    due_at     TIMESTAMPTZ NOT NULL,
    paid_at    TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    CHECK (status != 'paid' OR paid_at IS NOT NULL)
);
CREATE INDEX invoices_user ON invoices (user_id);
CREATE INDEX invoices_status_due ON invoices (status, due_at);
