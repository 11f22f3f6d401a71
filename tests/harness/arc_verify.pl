#!/usr/bin/perl
# An independent ARC verifier for the sealing tests: Perl's Mail::DKIM::ARC::Verifier (Debian
# libmail-dkim-perl), asking the DNS server given on the command line.
# Usage: arc_verify.pl DNS_HOST DNS_PORT < message
# Prints "result<TAB>detail" (pass | fail | none | ...), then one line per ARC-Seal:
# "seal<TAB>instance<TAB>cv<TAB>domain<TAB>result".
use strict;
use warnings;
use Mail::DKIM 1.20;
use Mail::DKIM::ARC::Verifier;
use Net::DNS::Resolver;

my ($host, $port) = @ARGV;
die "usage: $0 DNS_HOST DNS_PORT < message\n" unless defined $port;
Mail::DKIM::DNS::resolver(
    Net::DNS::Resolver->new(
        nameservers => [$host], port => $port, recurse => 0, retry => 2,
        udp_timeout => 5, tcp_timeout => 5, persistent_udp => 0,
    )
);
my $arc = Mail::DKIM::ARC::Verifier->new(Strict => 1);
binmode STDIN;
while (my $line = <STDIN>) {
    $line =~ s/\015?\012$/\015\012/;
    $arc->PRINT($line);
}
$arc->CLOSE;
printf "%s\t%s\n", $arc->result // '', $arc->result_detail // '';
foreach my $sig ($arc->signatures) {
    next unless ref($sig) =~ /Seal/;
    printf "seal\t%s\t%s\t%s\t%s\n", $sig->instance // '', $sig->chain // '', $sig->domain // '', $sig->result // '';
}
