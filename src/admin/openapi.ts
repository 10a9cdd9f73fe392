// The admin API's OpenAPI 3.1 description, served at /admin/v1/openapi.json.
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const jsonBody = (schema: unknown) => ({ required: true, content: { 'application/json': { schema } } });
const ok = (description: string, schema?: unknown) => ({ description, ...(schema ? { content: { 'application/json': { schema } } } : {}) });
const errors = {
  400: { $ref: '#/components/responses/BadRequest' },
  401: { $ref: '#/components/responses/Unauthorized' },
  403: { $ref: '#/components/responses/Forbidden' },
};
const withNotFound = { ...errors, 404: { $ref: '#/components/responses/NotFound' } };
const emailParam = { name: 'email', in: 'path', required: true, schema: { type: 'string', format: 'email' } };

export function openApiDocument(issuer: string) {
  return {
    openapi: '3.1.0',
    info: { title: 'idp admin API', version: '1', description: 'Operator API of the identity provider: users, sessions, clients, keys, audit. The CLI (`idp`) offers the same commands.' },
    servers: [{ url: `${issuer}/admin/v1` }],
    security: [{ adminToken: [] }],
    paths: {
      '/users': {
        get: { summary: 'List users', parameters: [{ name: 'pending_approval', in: 'query', schema: { type: 'boolean' } }], responses: { 200: ok('Users', { type: 'array', items: ref('User') }), ...errors } },
        post: { summary: 'Create a user with a password, or invite one (a set-password link is mailed)', requestBody: jsonBody(ref('NewUser')), responses: { 201: ok('Created', ref('User')), ...errors, 409: { $ref: '#/components/responses/Conflict' } } },
      },
      '/users/{email}': {
        parameters: [emailParam],
        get: { summary: 'One user', responses: { 200: ok('User', ref('User')), ...withNotFound } },
        patch: { summary: 'Change name, user type, roles or attributes', requestBody: jsonBody(ref('UserChanges')), responses: { 200: ok('User', ref('User')), ...withNotFound } },
      },
      '/users/{email}/{action}': {
        parameters: [emailParam, { name: 'action', in: 'path', required: true, schema: { enum: ['disable', 'enable', 'unlock', 'approve', 'reject', 'reset-mfa'] } }],
        post: { summary: 'disable (ends the sessions), enable, unlock, approve / reject (approval workflow), reset-mfa', responses: { 200: ok('Result'), ...withNotFound } },
      },
      '/users/{email}/sessions': {
        parameters: [emailParam],
        get: { summary: "The user's active sessions", responses: { 200: ok('Sessions', { type: 'array', items: ref('Session') }), ...withNotFound } },
        delete: { summary: 'End every session: refresh tokens revoked, back-channel logout sent', responses: { 200: ok('Count', { type: 'object', properties: { revoked: { type: 'integer' } } }), ...withNotFound } },
      },
      '/users/{email}/sessions/{sid}': {
        parameters: [emailParam, { name: 'sid', in: 'path', required: true, schema: { type: 'string' } }],
        delete: { summary: 'End one session (its id, or the sid claim a client got)', responses: { 200: ok('Count'), ...withNotFound } },
      },
      '/clients': {
        get: { summary: 'List clients', responses: { 200: ok('Clients', { type: 'array', items: { type: 'object' } }), ...errors } },
        post: { summary: 'Register a client (RFC 7591 metadata); the client_secret is in this response only', requestBody: jsonBody({ type: 'object' }), responses: { 201: ok('Client', { type: 'object' }), ...errors, 409: { $ref: '#/components/responses/Conflict' } } },
      },
      '/clients/{id}': {
        parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
        delete: { summary: 'Delete a client', responses: { 204: ok('Deleted'), ...withNotFound } },
      },
      '/keys': { get: { summary: 'Signing keys with their state and dates', responses: { 200: ok('Keys', { type: 'array', items: { type: 'object' } }), ...errors } } },
      '/keys/rotate': {
        post: { summary: 'Stage a new signing key (or switch at once with now)', requestBody: { content: { 'application/json': { schema: { type: 'object', properties: { now: { type: 'boolean' }, revoke_old: { type: 'boolean' }, alg: { enum: ['RS256', 'PS256', 'ES256', 'EdDSA'] } } } } } }, responses: { 201: ok('The new key', { type: 'object' }), ...errors } },
      },
      '/audit/verify': { get: { summary: 'Walk the audit hash chain', responses: { 200: ok('Result', { type: 'object' }), ...errors } } },
    },
    components: {
      securitySchemes: {
        adminToken: {
          type: 'oauth2',
          description: `A client registered with scope "idp:admin" asks the token endpoint for resource ${issuer}/admin.`,
          flows: { clientCredentials: { tokenUrl: `${issuer}/token`, scopes: { 'idp:admin': 'administer this identity provider' } } },
        },
      },
      responses: Object.fromEntries(([['BadRequest', 'Invalid input'], ['Unauthorized', 'Missing, unknown or expired token'], ['Forbidden', 'The token lacks the admin scope'], ['NotFound', 'No such user, session or client'], ['Conflict', 'Already exists']] as const)
        .map(([name, description]) => [name, { description, content: { 'application/json': { schema: ref('Error') } } }])),
      schemas: {
        Error: { type: 'object', required: ['error', 'error_description'], properties: { error: { type: 'string' }, error_description: { type: 'string' } } },
        User: {
          type: 'object',
          properties: {
            id: { type: 'string' }, email: { type: 'string' }, name: { type: ['string', 'null'] }, status: { enum: ['active', 'pending_verification', 'disabled', 'locked'] },
            email_verified: { type: 'boolean' }, user_type: { type: 'string' }, roles: { type: 'array', items: { type: 'string' } },
            approval: { enum: ['unverified', 'pending', 'verified', 'rejected', null] }, attributes: { type: 'object' },
            has_password: { type: 'boolean' }, password_changed_at: { type: ['string', 'null'], format: 'date-time' }, created_at: { type: 'string', format: 'date-time' },
          },
        },
        NewUser: {
          type: 'object', required: ['email'],
          properties: { email: { type: 'string' }, password: { type: 'string' }, invite: { type: 'boolean' }, name: { type: 'string' }, user_type: { type: 'string' }, roles: { type: 'array', items: { type: 'string' } }, attributes: { type: 'object' } },
        },
        UserChanges: { type: 'object', properties: { name: { type: 'string' }, user_type: { type: 'string' }, roles: { type: 'array', items: { type: 'string' } }, attributes: { type: 'object' } } },
        Session: {
          type: 'object',
          properties: { sid: { type: 'string' }, device: { type: 'string' }, ip: { type: ['string', 'null'] }, location: { type: ['string', 'null'] }, createdAt: { type: 'string' }, lastSeenAt: { type: 'string' }, expiresAt: { type: 'string' }, clients: { type: 'array', items: { type: 'string' } } },
        },
      },
    },
  };
}
