"""`pdpctl bundle verify|inspect|publish`: signed bundles and the OCI registry
(docs/bundles.md). Signing and verifying are OPA's; publishing uses the ORAS client."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from pdp.bundlesign import (
    SIGNING_ALGS,
    BundleInvalidError,
    BundleSigningError,
    inspect_bundle,
    verify_bundle,
)
from pdp.oci import OCIError, Reference, publish
from pdp.textsafe import safe

from .errors import BAD_INPUT, BUNDLE_INVALID, SERVICE_ERROR, CLIError
from .project import Project, pass_project

bundle_file = click.argument("file", type=click.Path(dir_okay=False, path_type=Path))


@click.command("verify")
@bundle_file
@click.option(
    "--verification-key",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="PEM public key the bundle must be signed with.",
)
@click.option(
    "--signing-alg",
    type=click.Choice(SIGNING_ALGS),
    default="ES256",
    show_default=True,
    help="Algorithm of the key (never read from the bundle).",
)
@pass_project
def verify_command(project: Project, file: Path, verification_key: Path, signing_alg: str) -> None:
    """Check FILE's signature and every file's hash with OPA (exit 12 when it does not
    verify: unsigned, tampered with, or signed by another key)."""
    try:
        verify_bundle(project.opa(), file, verification_key=verification_key, alg=signing_alg)
        info = inspect_bundle(project.opa(), file)
    except BundleInvalidError as exc:
        raise CLIError(f"{file}: signature does not verify: {safe(exc)}", BUNDLE_INVALID) from None
    except BundleSigningError as exc:
        raise CLIError(safe(exc), BAD_INPUT) from None
    kid = info.signer.get("key_id")
    click.echo(
        f"ok: {file} revision {safe(info.revision)} signed {info.signer.get('alg')}"
        + (f" key {safe(kid)}" if kid else "")
        + f", {info.signer.get('signed_files')} file(s) match their signed hashes"
    )


@click.command("inspect")
@bundle_file
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_project
def inspect_command(project: Project, file: Path, as_json: bool) -> None:
    """Show FILE's revision, content digest, roots, files and signer (the signature is not
    verified here: use `bundle verify`)."""
    try:
        info = inspect_bundle(project.opa(), file)
    except BundleSigningError as exc:
        raise CLIError(safe(exc), BAD_INPUT) from None
    if as_json:
        click.echo(json.dumps(info.to_json(), indent=2))
        return
    click.echo(f"revision: {safe(info.revision)}")
    click.echo(
        f"content:  {safe(info.content_digest) if info.content_digest else 'no content digest'}"
    )
    click.echo(f"roots:    {', '.join(safe(r) or '(all)' for r in info.roots)}")
    if info.signed:
        signer = ", ".join(f"{k} {safe(v)}" for k, v in info.signer.items())
        click.echo(f"signer:   {signer} (not verified: use `pdpctl bundle verify`)")
    else:
        click.echo("signer:   none (unsigned)")
    click.echo(f"files ({len(info.files)}):")
    for name in info.files:
        click.echo(f"  {safe(name)}")


@click.command("publish")
@bundle_file
@click.argument("reference")
@click.option(
    "--plain-http",
    is_flag=True,
    help="Talk HTTP, not HTTPS, to the registry (a loopback test registry only).",
)
@click.option(
    "--username",
    envvar="PDP_REGISTRY_USERNAME",
    show_envvar=True,
    help="Registry user; the password comes from PDP_REGISTRY_PASSWORD (never argv).",
)
@pass_project
def publish_command(
    project: Project, file: Path, reference: str, plain_http: bool, username: str | None
) -> None:
    """Push bundle FILE to REFERENCE (oci://HOST[:PORT]/REPO:TAG) as the OCI artifact OPA's
    OCI downloader reads: one tar+gzip layer, signature included."""
    try:
        ref = Reference.parse(reference)
        info = inspect_bundle(project.opa(), file)
        published = publish(
            file,
            ref,
            revision=info.revision,
            plain_http=plain_http,
            username=username,
            password=os.environ.get("PDP_REGISTRY_PASSWORD"),
        )
    except BundleSigningError as exc:
        raise CLIError(safe(exc), BAD_INPUT) from None
    except OCIError as exc:
        raise CLIError(safe(exc), SERVICE_ERROR) from None
    signed = "signed" if info.signed else "UNSIGNED"
    click.echo(
        f"published {file} ({signed}, revision {safe(info.revision)}) to {ref} "
        f"manifest {published.manifest_digest} layer {published.layer_digest}"
    )
