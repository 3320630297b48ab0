# syntax=docker/dockerfile:1
# Portcullis container image: build with the official Node image, run on distroless.
# test/integration/container-build.test.ts parses this file and replays its steps without a Docker
# engine; keep the build stage's COPY/RUN and the runtime stage's COPY --from=build / USER / CMD simple.

FROM node:24-trixie-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# dev dependencies are needed for tsc; pruned below
RUN npm ci
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM gcr.io/distroless/nodejs24-debian13:nonroot
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# distroless "nonroot" user
USER 65532:65532
EXPOSE 4180
# no curl or wget in distroless: probe /healthz with node itself (Kubernetes ignores this; use probes)
# The probe reads server.listen from the same config, so it follows a port set there.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/nodejs/bin/node", "dist/main.js", "healthcheck", "--config", "/etc/portcullis/config.yaml"]
# the image's entrypoint is /nodejs/bin/node; node runs as PID 1 and main.ts handles SIGTERM/SIGINT
CMD ["dist/main.js", "--config", "/etc/portcullis/config.yaml"]
