// Test harness: starts the real taphouse binary on a free loopback port
// with a fresh SQLite database, and creates API keys with the real CLI.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '..', '..');
export const BIN = process.env.TAPHOUSE_BIN ?? join(ROOT, 'build', 'taphouse');
export const MODEL = join(ROOT, 'models', 'stories260K-f32.gguf');
export const MODEL_ID = 'stories260K-f32';
export const REFERENCE = join(ROOT, '..', 'shared', 'reference');

const READY_TIMEOUT_MS = 30000;

// Run a taphouse command and return its standard output.
export function taphouse(args) {
  return execFileSync(BIN, args, { encoding: 'utf8', timeout: 20000 });
}

// Create a key for TENANT; returns the secret (the last output line).
export function createKey(db, tenant, label) {
  const args = ['keys', 'create', '--db', db, '--tenant', tenant];
  if (label) args.push('--name', label);
  const lines = taphouse(args).trim().split('\n');
  return lines[lines.length - 1].trim();
}

// Run SQL against the database with the sqlite3 shell; returns rows.
export function sql(db, query) {
  // The server may hold a lock for a moment (a commit, a checkpoint).
  const out = execFileSync('sqlite3', ['-cmd', '.timeout 5000', '-json',
    db, query], {
    encoding: 'utf8',
    timeout: 10000,
  });
  return out.trim() === '' ? [] : JSON.parse(out);
}

// Start a server; resolves to { baseURL, port, db, dir, log(), stop() }.
export async function startServer(extraArgs = []) {
  const dir = mkdtempSync(join(tmpdir(), 'taphouse-e2e-'));
  const db = join(dir, 'taphouse.db');
  const child = spawn(BIN, [
    'serve', '--model', MODEL, '--host', '127.0.0.1', '--port', '0',
    '--db', db, '--threads', '2', ...extraArgs,
  ], { stdio: ['ignore', 'pipe', 'pipe'] });

  let output = '';
  const onData = (chunk) => { output += chunk.toString(); };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);

  const port = await new Promise((resolvePort, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`server not ready after ${READY_TIMEOUT_MS} ms:\n${output}`));
    }, READY_TIMEOUT_MS);
    const check = () => {
      const m = output.match(/ready: .* on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) {
        clearTimeout(timer);
        resolvePort(Number(m[1]));
      }
    };
    child.stdout.on('data', check);
    child.stderr.on('data', check);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${output}`));
    });
  });

  return {
    port,
    db,
    dir,
    baseURL: `http://127.0.0.1:${port}/v1`,
    child,
    log: () => output,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
      return child.exitCode;
    },
  };
}

export function readReference(model, file) {
  return JSON.parse(readFileSync(join(REFERENCE, model, file), 'utf8'));
}

// Reference fields that llama.cpp's tools stored as JSON text.
export function parseMaybeString(value) {
  return typeof value === 'string' ? JSON.parse(value) : value;
}
