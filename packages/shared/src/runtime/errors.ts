/** Errors with a stable code, mapped to HTTP statuses by the API and to exit codes by the CLI. */
export type ErrorCode =
  | 'not_found'
  | 'invalid_request'
  | 'conflict'
  | 'stop_disabled'
  | 'unauthorized'
  | 'payload_too_large'
  | 'unavailable'
  | 'internal';

const STATUS: Record<ErrorCode, number> = {
  not_found: 404,
  invalid_request: 400,
  conflict: 409,
  stop_disabled: 409,
  unauthorized: 401,
  payload_too_large: 413,
  unavailable: 503,
  internal: 500,
};

export class OrchError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'OrchError';
    this.code = code;
    this.status = STATUS[code];
  }
}
