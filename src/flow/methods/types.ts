// The contract every sign-in method fulfils (in the spirit of Ory Kratos strategies): password,
// emailed code, passkey today; upstream OIDC, SAML and LDAP next. A method is one module plus its
// screen template, registered in the method list the app builds (src/app/sign-in.ts). The stages
// and routes never branch on a method: they ask it.
import type { Flow, MethodEventName, Notice } from '../machine.ts';

/** A form post's fields, as plain strings (never a framework object: flow/ knows no HTTP). */
export type FormFields = Readonly<Record<string, string>>;

/** A field cut to `max` characters; '' when absent. */
export const field = (fields: FormFields, name: string, max = 4096): string => (fields[name] ?? '').slice(0, max);

/** About the request a submission came with. */
export interface RequestInfo {
  ip?: string | undefined;
  userAgent?: string | undefined;
  requestId?: string | undefined;
  clientId?: string | undefined;
  /** acr_values of the authorization request. */
  acrValues?: string[] | undefined;
  /** The remembered-device cookie, if the browser sent one. */
  deviceToken?: string | undefined;
  /** The relying party asked for a fresh sign-in (prompt=login, an exceeded max_age). */
  freshLogin?: boolean | undefined;
  /** A redirect method's answer: the path segment after /interaction/callback/<method>/ (its connection). */
  callbackKey?: string | undefined;
  /** A redirect method's answer: the sign-ins this browser sent upstream (their binding cookies). */
  startedFlows?: readonly string[] | undefined;
}

/** What a method reports about one submission (or its entry, or an upstream callback). */
export type MethodOutcome =
  /** The account is known and the method's factor proven. */
  | { kind: 'verified'; event: MethodEventName; accountId: string; email?: string; amr: string[]; passwordExpired?: boolean }
  /** A wrong credential: counts as a failed attempt of this sign-in. */
  | { kind: 'rejected'; event: MethodEventName; reason: string; notice: Notice; display?: Record<string, unknown> }
  /** The method needs something more (a code was sent, the address must be verified): no failure. */
  | { kind: 'pending'; event: MethodEventName; reason?: string; notice?: Notice; display?: Record<string, unknown> }
  /** Too many failures from this origin: nothing was checked. */
  | { kind: 'throttled'; retryAfterSeconds: number }
  /**
   * Another method takes over: the user asked for it (the password screen's "email me a code"), or
   * an upstream answer names an existing account to prove first (`email`, and `handOver`: this
   * method hears when that sign-in is through, in `finished`).
   */
  | { kind: 'switch'; method: string; email?: string; handOver?: boolean; notice?: Notice }
  /** Back to the identifier ("not you?"). */
  | { kind: 'restart' }
  /** The browser goes to an upstream provider; its answer arrives at the callback with `state`. */
  | { kind: 'redirect'; event: MethodEventName; url: string; state: string }
  /** Nothing to do (a switched-off feature, input for nothing). */
  | { kind: 'none'; notice?: Notice; display?: Record<string, unknown> };

/** An entry on the identify screen for a method that identifies the account itself. */
export interface MethodOffer {
  /** interactions/templates/<template>.html, filled with `vars` and the screen's common fields. */
  template: string;
  vars: Record<string, unknown>;
}

export interface SignInMethod {
  readonly id: string;
  /**
   * Identifier-first methods (password, emailed code) follow a typed address; the others (a
   * passkey, an upstream provider) are chosen by a button on the identify screen.
   */
  readonly identifierFirst: boolean;
  /** Its screen at `authenticate`: the path its forms post to under /interaction/:uid/, and its template. */
  readonly screen?: { path: string; template: string };
  /**
   * Whether this identifier is routed to the method (home-realm discovery by email domain): any
   * method may claim typed addresses. The first method that claims it wins; the password otherwise.
   */
  routes?(identifier: string, request: RequestInfo): Promise<boolean>;
  /** Its button on the identify screen, if it offers one there. */
  offer?(flow: Flow, request: RequestInfo): Promise<MethodOffer | undefined>;
  /** Runs when the flow enters this method (send a code; build an upstream redirect). */
  enter?(flow: Flow, request: RequestInfo): Promise<MethodOutcome>;
  /** One form post to its screen (or its identify-screen button). */
  submit(flow: Flow, fields: FormFields, request: RequestInfo): Promise<MethodOutcome>;
  /** Redirect methods: the upstream's answer, delivered to the flow that sent `state`. */
  callback?(flow: Flow, params: FormFields, request: RequestInfo): Promise<MethodOutcome>;
  /** Values its screen shows beyond the common ones (plain values; templates escape them). */
  view?(flow: Flow): Promise<Record<string, unknown>> | Record<string, unknown>;
  /** Once the whole sign-in is done (every factor through): the flow's method, and the one that handed over to it. */
  finished?(flow: Flow, request: RequestInfo): Promise<void>;
}

/** The registered methods, in order of precedence. */
export class MethodRegistry {
  readonly #methods: ReadonlyMap<string, SignInMethod>;
  readonly #fallback: string;

  constructor(methods: SignInMethod[], fallback = 'password') {
    this.#methods = new Map(methods.map((m) => [m.id, m]));
    if (this.#methods.size !== methods.length) throw new Error('two sign-in methods share an id');
    if (!this.#methods.get(fallback)?.identifierFirst) throw new Error(`the fallback sign-in method ${fallback} must be registered and identifier-first`);
    this.#fallback = fallback;
  }

  get(id: string | undefined): SignInMethod | undefined {
    return id === undefined ? undefined : this.#methods.get(id);
  }

  all(): SignInMethod[] {
    return [...this.#methods.values()];
  }

  /** The method a typed identifier goes to; never reveals whether an account exists. */
  async forIdentifier(identifier: string, request: RequestInfo): Promise<SignInMethod> {
    for (const method of this.#methods.values()) {
      if (method.routes && (await method.routes(identifier, request))) return method;
    }
    return this.#methods.get(this.#fallback)!;
  }

  /** The method whose screen posts to `path`. */
  byPath(path: string): SignInMethod | undefined {
    return this.all().find((m) => m.screen?.path === path);
  }
}
