// One error base for the project. `code` is a stable string callers and tests can rely on;
// `status` is the HTTP status when the error reaches a client; `expose` says whether its message
// is safe to show (never true for errors carrying internal detail).
export class IdpError extends Error {
  readonly code: string;
  readonly status: number;
  readonly expose: boolean;

  constructor(code: string, message: string, options: { status?: number; expose?: boolean; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'IdpError';
    this.code = code;
    this.status = options.status ?? 400;
    this.expose = options.expose ?? this.status < 500;
  }
}

export class ConfigError extends IdpError {
  constructor(message: string) {
    super('ERR_CONFIG', message, { status: 500, expose: false });
    this.name = 'ConfigError';
  }
}

export class ValidationError extends IdpError {
  constructor(message: string) {
    super('ERR_VALIDATION', message, { status: 400, expose: true });
    this.name = 'ValidationError';
  }
}

export class NotFoundError extends IdpError {
  constructor(message: string) {
    super('ERR_NOT_FOUND', message, { status: 404, expose: true });
    this.name = 'NotFoundError';
  }
}

export class ConflictError extends IdpError {
  constructor(message: string) {
    super('ERR_CONFLICT', message, { status: 409, expose: true });
    this.name = 'ConflictError';
  }
}
