-- Payments between users for services, ratings of completed payments, and invoices.

CREATE TABLE transactions (
    id           TEXT PRIMARY KEY NOT NULL,
    buyer_id     TEXT NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    seller_id    TEXT REFERENCES users (id) ON DELETE RESTRICT,
    service_id   TEXT REFERENCES services (id) ON DELETE SET NULL,
    amount       INTEGER NOT NULL CHECK (amount >= 0),
    token        TEXT NOT NULL,
    chain_id     INTEGER NOT NULL CHECK (chain_id > 0),
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'completed', 'failed', 'refunded')),
    tx_hash      TEXT NOT NULL UNIQUE,
    confirmed_at TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    CHECK (seller_id IS NOT NULL OR service_id IS NOT NULL)
);
CREATE INDEX transactions_buyer_created ON transactions (buyer_id, created_at);
CREATE INDEX transactions_seller ON transactions (seller_id);
CREATE INDEX transactions_service_status ON transactions (service_id, status);

CREATE TABLE ratings (
    id             TEXT PRIMARY KEY NOT NULL,
    transaction_id TEXT NOT NULL UNIQUE REFERENCES transactions (id) ON DELETE CASCADE,
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    service_id     TEXT NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    score          INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
    title          TEXT NOT NULL DEFAULT '',
    body           TEXT NOT NULL DEFAULT '',
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX ratings_service ON ratings (service_id);
CREATE INDEX ratings_user ON ratings (user_id);

CREATE TABLE invoices (
    id         TEXT PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    number     TEXT NOT NULL UNIQUE,
    items      TEXT NOT NULL DEFAULT '[]',
    amount     INTEGER NOT NULL CHECK (amount >= 0),
    status     TEXT NOT NULL DEFAULT 'open'
               CHECK (status IN ('draft', 'open', 'paid', 'void', 'overdue')),
    due_at     TEXT NOT NULL,
    paid_at    TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CHECK (status != 'paid' OR paid_at IS NOT NULL)
);
CREATE INDEX invoices_user ON invoices (user_id);
CREATE INDEX invoices_status_due ON invoices (status, due_at);
