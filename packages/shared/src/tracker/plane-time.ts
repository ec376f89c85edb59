/**
 * Plane's datetimes as instants. REST answers in the token owner's time zone
 * (apps/api/plane/api/views/base.py `TimezoneMixin`: `timezone.activate(zoneinfo.ZoneInfo(
 * request.user.user_timezone))`, so `2024-05-01T15:30:00.123456+05:30`), webhooks in UTC
 * (`…Z`, serialized in the Celery worker where no zone is active), and DRF's `isoformat()` leaves
 * the fraction out when the microseconds are 0. The same instant therefore arrives as different
 * strings; keys and comparisons use `utcInstant`, never the string.
 */

const ISO = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)$/i;

/**
 * The instant as UTC with exactly six fraction digits (`2024-05-01T10:00:00.123456Z`), or null
 * when `s` is not an ISO-8601 date-time with a zone. Digits past the sixth are truncated.
 */
export function utcInstant(s: string | null | undefined): string | null {
  if (typeof s !== 'string') return null;
  const m = ISO.exec(s.trim());
  if (!m) return null;
  const [, y, mo, d, h, mi, sec = '00', frac = '', zone] = m;
  let offsetMin = 0;
  if (zone!.toUpperCase() !== 'Z') {
    const z = /^([+-])(\d{2}):?(\d{2})?$/.exec(zone!)!;
    offsetMin = (z[1] === '-' ? -1 : 1) * (Number(z[2]) * 60 + Number(z[3] ?? '0'));
  }
  const ms = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(sec)) - offsetMin * 60_000;
  if (!Number.isFinite(ms)) return null;
  const whole = new Date(ms).toISOString().slice(0, 19); // seconds precision, UTC
  return `${whole}.${frac.slice(0, 6).padEnd(6, '0')}Z`;
}

/** The instant as a Date (millisecond precision), or null. */
export function planeDate(s: string | null | undefined): Date | null {
  const u = utcInstant(s);
  return u === null ? null : new Date(u.slice(0, 23) + 'Z');
}
