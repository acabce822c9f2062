# Images for the runner and the operator: `docker build --target runner -t ferry-runner .`
# and `docker build --target operator -t ferry-operator .`. Both run as the distroless
# nonroot user (65532), which the runner pod's securityContext also names.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
ENV CARGO_TARGET_DIR=/target
RUN cargo build --release --locked -p ferry-runner -p ferry-operator

FROM gcr.io/distroless/cc-debian12:nonroot AS runner
COPY --from=build /target/release/ferry-runner /usr/local/bin/ferry-runner
USER 65532:65532
ENTRYPOINT ["ferry-runner"]

FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /target/release/ferry-operator /usr/local/bin/ferry-operator
USER 65532:65532
ENTRYPOINT ["ferry-operator"]
