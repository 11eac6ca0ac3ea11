/*
 * config_capture.h - the configuration outside the data directory, copied
 * into it before each backup (see config_capture.c).
 */
#ifndef AMIS_CONFIG_CAPTURE_H
#define AMIS_CONFIG_CAPTURE_H

/* ami_snapshot.capture_config */
extern bool capture_config;

/*
 * Copies the files into $PGDATA/ami_snapshot/config.  Returns how many, or
 * -1 when off or when nothing could be written; problems are WARNINGs.
 */
extern int	capture_config_files(void);

#endif
