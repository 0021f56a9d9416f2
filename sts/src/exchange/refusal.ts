import { errors } from "oidc-provider";

/** A token exchange refusal: an OAuth wire error plus a stable reason code for audit and metrics. */
export type Refusal = InstanceType<typeof errors.OIDCProviderError> & { reason: string };

type ErrorClass = new (
  description: string,
  ...rest: never[]
) => InstanceType<typeof errors.OIDCProviderError>;

/** Builds an oidc-provider error carrying `reason`. */
export function refusal(ErrorType: ErrorClass, reason: string, description: string): Refusal {
  // Some oidc-provider errors keep a fixed error_description and put the argument in error_detail:
  // the contract wants the specific description on the wire.
  return Object.assign(new ErrorType(description), { reason, error_description: description });
}

/** 503 `temporarily_unavailable`: fail closed when a dependency (database, issuer keys) is down. */
export function unavailable(
  reason: string,
  description = "the service is temporarily unavailable, retry shortly",
): Refusal {
  const error = refusal(errors.TemporarilyUnavailable, reason, description);
  Object.assign(error, { status: 503, statusCode: 503, expose: true });
  return error;
}

/** True for errors built by {@link refusal}. */
export function isRefusal(error: unknown): error is Refusal {
  return (
    error instanceof errors.OIDCProviderError && typeof (error as { reason?: unknown }).reason === "string"
  );
}
