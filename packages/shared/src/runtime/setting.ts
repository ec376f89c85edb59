/**
 * The kit settings are declared with: one call per environment variable, carrying its name, type,
 * default, a line of documentation and whether it is a secret. `config.ts` declares every
 * setting once with these; validation, the typed `Config`, `orch config` and the reference in
 * docs/configuration.md are all derived from those declarations.
 */
import path from 'node:path';

export type Raw = string | undefined;
export type ParseResult<T> = { ok: true; value: T } | { ok: false; message: string };

export interface Setting<T> {
  readonly kind: 'setting';
  readonly env: string;
  readonly doc: string;
  readonly secret: boolean;
  /** the type as the reference shows it */
  readonly type: string;
  /** the default as the reference shows it ('' when there is none) */
  readonly shownDefault: string;
  /** parse a raw value; `undefined` (unset or blank) gives the default */
  parse(raw: Raw, resolved: ResolvedSoFar): ParseResult<T>;
  /** the effective value as `orch config` prints it (default: String); given this setting's own value */
  show?: (value: unknown) => string;
}

/** Settings parsed before this one (declaration order), for defaults that depend on another. */
export type ResolvedSoFar = ReadonlyMap<string, unknown>;

/** A group of settings that are set together or not at all; unset, the group is `null`. */
export interface Together<F extends Record<string, Setting<unknown>>> {
  readonly kind: 'together';
  readonly fields: F;
}

export type Declaration = Setting<unknown> | Together<Record<string, Setting<unknown>>> | { readonly [key: string]: Declaration };

/** The typed value of a declaration tree. */
export type ConfigOf<D> =
  D extends Setting<infer V>
    ? V
    : D extends Together<infer F>
      ? { [K in keyof F]: NonNullable<ConfigOf<F[K]>> } | null
      : { [K in keyof D]: ConfigOf<D[K]> };

interface Common {
  doc: string;
  secret?: boolean;
}

const blank = (v: Raw) => v === undefined || v.trim() === '';
const ok = <T>(value: T): ParseResult<T> => ({ ok: true, value });
const bad = (message: string): ParseResult<never> => ({ ok: false, message });

function make<T>(env: string, o: Common, type: string, shownDefault: string, parse: Setting<T>['parse']): Setting<T> {
  return { kind: 'setting', env, doc: o.doc, secret: o.secret ?? false, type, shownDefault, parse };
}

const FALSE = new Set(['false', '0', 'no', 'off']);
const TRUE = new Set(['true', '1', 'yes', 'on']);

export function flag(env: string, o: Common & { default: boolean }): Setting<boolean> {
  return make(env, o, 'boolean', String(o.default), (raw) => {
    if (blank(raw)) return ok(o.default);
    const s = raw!.trim().toLowerCase();
    if (TRUE.has(s)) return ok(true);
    if (FALSE.has(s)) return ok(false);
    return bad(`expected true/false, got "${raw}"`);
  });
}

function numberType(o: { int?: boolean; min?: number; max?: number }): string {
  const base = o.int ? 'integer' : 'number';
  if (o.min !== undefined && o.max !== undefined) return `${base} ${o.min}–${o.max}`;
  if (o.min !== undefined) return `${base} ≥ ${o.min}`;
  return base;
}

function parseNumber(raw: string, o: { int?: boolean; min?: number; max?: number }): ParseResult<number> {
  const n = Number(raw);
  if (!Number.isFinite(n) || (o.int && !Number.isInteger(n)) || (o.min !== undefined && n < o.min) || (o.max !== undefined && n > o.max))
    return bad(`expected ${o.int ? 'an integer' : 'a number'}${o.min !== undefined ? ` >= ${o.min}` : ''}${o.max !== undefined ? ` <= ${o.max}` : ''}, got "${raw}"`);
  return ok(n);
}

type NumberOpts = Common & { int?: boolean; min?: number; max?: number };

export function number(env: string, o: NumberOpts & { default: number }): Setting<number> {
  return make(env, o, numberType(o), String(o.default), (raw) => (blank(raw) ? ok(o.default) : parseNumber(raw!.trim(), o)));
}

/** A number with no default: unset is `undefined`. */
export function optionalNumber(env: string, o: NumberOpts): Setting<number | undefined> {
  return make(env, o, numberType(o), '', (raw) => (blank(raw) ? ok(undefined) : parseNumber(raw!.trim(), o)));
}

export function text(env: string, o: Common & { default: string }): Setting<string>;
export function text(env: string, o: Common & { default?: undefined; pattern?: RegExp; expected?: string }): Setting<string | undefined>;
export function text(env: string, o: Common & { default?: string; pattern?: RegExp; expected?: string }): Setting<string | undefined> {
  return make(env, o, o.expected ?? 'string', o.default ?? '', (raw) => {
    if (blank(raw)) return ok(o.default);
    const v = raw!.trim();
    if (o.pattern && !o.pattern.test(v)) return bad(`expected ${o.expected ?? 'a valid value'}`);
    return ok(v);
  });
}

export function httpUrl(env: string, o: Common): Setting<string | undefined> {
  return text(env, { ...o, pattern: /^https?:\/\/[^\s]+$/, expected: 'an http(s) URL' });
}

export function choice<const V extends readonly string[]>(env: string, values: V, o: Common & { default: V[number] }): Setting<V[number]> {
  return make(env, o, values.join(' | '), o.default, (raw) => {
    if (blank(raw)) return ok(o.default);
    const v = raw!.trim();
    return (values as readonly string[]).includes(v) ? ok(v as V[number]) : bad(`expected one of ${values.join(', ')}, got "${raw}"`);
  });
}

/**
 * A comma-separated list. Unset → `undefined` (the consumer's default); `none` → `[]`.
 */
export function list(env: string, o: Common & { shownDefault?: string }): Setting<string[] | undefined> {
  return make(env, o, 'comma-separated list, or none', o.shownDefault ?? '', (raw) => {
    if (raw === undefined) return ok(undefined);
    if (raw.trim().toLowerCase() === 'none') return ok([]);
    if (raw.trim() === '') return ok(undefined);
    return ok(raw.split(',').map((t) => t.trim()).filter(Boolean));
  });
}

/**
 * A filesystem path, resolved against the process's cwd. The default may be derived from a
 * setting declared before this one (e.g. `$ORCH_HOME/worktrees`).
 */
export function dirPath(env: string, o: Common & { default: string | ((resolved: ResolvedSoFar) => string); shownDefault?: string }): Setting<string> {
  const shown = o.shownDefault ?? (typeof o.default === 'string' ? o.default : '');
  return make(env, o, 'path', shown, (raw, resolved) => ok(path.resolve(blank(raw) ? (typeof o.default === 'string' ? o.default : o.default(resolved)) : raw!.trim())));
}

/** A string whose default is computed when unset (e.g. the OS hostname). */
export function computed(env: string, o: Common & { compute: () => string; shownDefault: string }): Setting<string> {
  return make(env, o, 'string', o.shownDefault, (raw) => ok(blank(raw) ? o.compute() : raw!.trim()));
}

/**
 * A value with a syntax of its own, parsed by `parse` (which throws with a message on bad input);
 * unset or blank gives `fallback`.
 */
export function parsed<T>(
  env: string,
  o: Common & { type: string; shownDefault: string; fallback: T; parse: (raw: string) => T; show: (value: T) => string },
): Setting<T> {
  const s = make<T>(env, o, o.type, o.shownDefault, (raw) => {
    if (blank(raw)) return ok(o.fallback);
    try {
      return ok(o.parse(raw!.trim()));
    } catch (err) {
      return bad((err as Error).message);
    }
  });
  return { ...s, show: (v) => o.show(v as T) };
}

export function together<F extends Record<string, Setting<unknown>>>(fields: F): Together<F> {
  return { kind: 'together', fields };
}

// ---------------------------------------------------------------------------------------------
// Walking a declaration tree

export interface SettingEntry {
  /** dotted path in Config, e.g. `agent.claude.bin` */
  path: string;
  setting: Setting<unknown>;
  /** the `together` group it belongs to, by path */
  group?: string;
}

export function settingsOf(decl: Declaration, prefix = '', group?: string): SettingEntry[] {
  if ((decl as Setting<unknown>).kind === 'setting') return [{ path: prefix, setting: decl as Setting<unknown>, group }];
  if ((decl as Together<never>).kind === 'together') return settingsOf((decl as Together<Record<string, Setting<unknown>>>).fields, prefix, prefix);
  return Object.entries(decl).flatMap(([k, d]) => settingsOf(d as Declaration, prefix ? `${prefix}.${k}` : k, group));
}

export interface Parsed<D> {
  value: ConfigOf<D>;
  issues: string[];
}

/** Parse `env` against the declarations: every bad variable is an issue naming it. */
export function parseDeclarations<D extends Declaration>(decl: D, env: Record<string, string | undefined>): Parsed<D> {
  const issues: string[] = [];
  const resolved = new Map<string, unknown>();
  function walk(d: Declaration): unknown {
    if ((d as Setting<unknown>).kind === 'setting') {
      const s = d as Setting<unknown>;
      const r = s.parse(env[s.env], resolved);
      if (!r.ok) {
        issues.push(`${s.env}: ${r.message}`);
        return undefined;
      }
      resolved.set(s.env, r.value);
      return r.value;
    }
    if ((d as Together<never>).kind === 'together') {
      const fields = (d as Together<Record<string, Setting<unknown>>>).fields;
      const values = Object.fromEntries(Object.entries(fields).map(([k, s]) => [k, walk(s)]));
      const set = Object.values(fields).filter((s) => !blank(env[s.env]));
      if (set.length === 0) return null;
      if (set.length < Object.keys(fields).length) {
        issues.push(`${Object.values(fields).map((s) => s.env).join(', ')}: set all of them or none`);
        return null;
      }
      return values;
    }
    return Object.fromEntries(Object.entries(d).map(([k, sub]) => [k, walk(sub as Declaration)]));
  }
  const value = walk(decl) as ConfigOf<D>;
  return { value, issues };
}
