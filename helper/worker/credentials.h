/*
 * credentials.h - AWS credentials as the signer consumes them.
 *
 * Produced by the credential chain (creds.c: environment, shared
 * credentials file, IMDS role) and consumed by sigv4.c/ec2.c.  The secret
 * parts must never be logged or put into an error message.
 */
#ifndef AMIS_CREDENTIALS_H
#define AMIS_CREDENTIALS_H

#include <time.h>

struct aws_credentials {
	char access_key_id[128];
	char secret_access_key[128];
	char session_token[4096]; /* empty when none */
	time_t expiration;        /* 0 = does not expire */
	char source[32];          /* "environment", "profile:NAME", "imds:ROLE", "config" */
};

#endif
