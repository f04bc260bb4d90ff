-- Tenants, API keys, the usage ledger and store-wide settings.
-- Times are Unix milliseconds, UTC. Later migrations add tiers and prices
-- as their own tables that reference tenants(id), so nothing here needs
-- to change for them.

CREATE TABLE tenants (
    id         INTEGER PRIMARY KEY,
    name       TEXT UNIQUE NOT NULL,
    created_ms INTEGER NOT NULL
);

-- Only a keyed BLAKE2b hash of each secret is kept; the hashing key is
-- the 'key_hash_key' row of settings.
CREATE TABLE api_keys (
    key_id     TEXT PRIMARY KEY,
    tenant_id  INTEGER NOT NULL REFERENCES tenants(id),
    label      TEXT,
    hash       BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);

CREATE INDEX api_keys_tenant ON api_keys(tenant_id);

-- One row per finished request. key_id and tenant_id carry no foreign
-- key, so ledger rows outlive the keys and tenants they name.
CREATE TABLE usage (
    id                INTEGER PRIMARY KEY,
    ts_ms             INTEGER NOT NULL,
    request_id        TEXT NOT NULL,
    key_id            TEXT,
    tenant_id         INTEGER,
    model             TEXT,
    endpoint          TEXT,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    latency_ms        INTEGER NOT NULL DEFAULT 0,
    http_status       INTEGER NOT NULL,
    finish_reason     TEXT
);

CREATE INDEX usage_tenant_ts ON usage(tenant_id, ts_ms);
CREATE INDEX usage_key ON usage(key_id);

CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value BLOB
);

-- 'auth_generation' counts changes to keys and tenants that can end a
-- cached authentication (revocation, deletion, renaming). The daemon's
-- auth cache compares it instead of dropping itself on every commit,
-- because usage rows are committed many times a second.
INSERT INTO settings (name, value) VALUES ('auth_generation', 0);

CREATE TRIGGER api_keys_update_auth AFTER UPDATE ON api_keys BEGIN
    UPDATE settings SET value = value + 1 WHERE name = 'auth_generation';
END;
CREATE TRIGGER api_keys_delete_auth AFTER DELETE ON api_keys BEGIN
    UPDATE settings SET value = value + 1 WHERE name = 'auth_generation';
END;
CREATE TRIGGER tenants_update_auth AFTER UPDATE ON tenants BEGIN
    UPDATE settings SET value = value + 1 WHERE name = 'auth_generation';
END;
CREATE TRIGGER tenants_delete_auth AFTER DELETE ON tenants BEGIN
    UPDATE settings SET value = value + 1 WHERE name = 'auth_generation';
END;
