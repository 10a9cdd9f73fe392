# Production image: Node 24, the project's production dependencies, a non-root user.
# Configure it with environment variables (see README); mount a volume for MASTER_KEY_FILE.

FROM node:24-slim AS build
# pkcs11js (the PKCS#11 binding) is compiled at install; it is a Node-API addon, so the binary
# built here runs on the runtime stage's Node.
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
# `npm ci` runs the project's prepare script, which generates the Prisma clients into src/store/generated.
RUN npm ci --no-audit --no-fund && npm prune --omit=dev --no-audit --no-fund

FROM node:24-slim
ENV NODE_ENV=production HOST=0.0.0.0 PORT=3000 MASTER_KEY_FILE=/var/lib/idp/master.key
WORKDIR /app
COPY --from=build /app/package.json /app/package-lock.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/bin ./bin
COPY --from=build /app/src ./src
COPY --from=build /app/prisma ./prisma
COPY --from=build /app/interactions ./interactions
RUN mkdir -p /var/lib/idp && chown node:node /var/lib/idp
USER node
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=3s CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# Migrations take a database-wide lock, so every replica can run them at start safely.
CMD ["sh", "-c", "node bin/idp.js migrate && exec node bin/idp.js serve"]
